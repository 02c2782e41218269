package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/grouploss/pipeline/pipeline/train"
)

const (
	plotW, plotH = 5.6 * vg.Inch, 3.3 * vg.Inch
	plotDPI      = 180 // drawn at 1008×594 px, shown at up to 560 px wide: sharp on high-density screens
)

var (
	curveColor = color.RGBA{R: 0x2b, G: 0x5c, B: 0xc4, A: 0xff}
	bestColor  = color.RGBA{R: 0xd3, G: 0x3a, B: 0x2c, A: 0xff}
)

// plots draws the loss per epoch and, with a score name, the validation score per epoch (in %),
// each marking the best epoch, as PNG. note says what could not be drawn.
func plots(h []train.EpochStats, scoreName string, best int) (loss, score []byte, note string, err error) {
	var lossXY, scoreXY plotter.XYs
	for _, e := range h {
		if e.Epoch >= 1 {
			lossXY = append(lossXY, plotter.XY{X: float64(e.Epoch), Y: e.Loss})
		}
		scoreXY = append(scoreXY, plotter.XY{X: float64(e.Epoch), Y: 100 * e.Score})
	}
	if len(lossXY) == 0 {
		return nil, nil, "No training history (no epoch was trained).", nil
	}
	xr := [2]float64{lossXY[0].X, lossXY[len(lossXY)-1].X} // both plots on the same epochs
	if scoreName != "" {
		xr[0] = math.Min(xr[0], scoreXY[0].X)
	}
	if loss, err = curve("Training loss", "mean loss per step", lossXY, xr, best, false); err != nil {
		return nil, nil, "", err
	}
	if scoreName == "" {
		return loss, nil, fmt.Sprintf("No validation score (no validation classes): the last epoch, %d, was kept.", best), nil
	}
	if score, err = curve(scoreName+" per epoch", scoreName+" (%)", scoreXY, xr, best, true); err != nil {
		return nil, nil, "", err
	}
	bestScore := math.NaN()
	for _, xy := range scoreXY {
		if int(xy.X) == best {
			bestScore = xy.Y
		}
	}
	note = fmt.Sprintf("Selected epoch %d by %s", best, scoreName)
	if !math.IsNaN(bestScore) {
		note += fmt.Sprintf(" (%.2f%%)", bestScore)
	}
	if len(scoreXY) > 0 && scoreXY[0].X == 0 {
		note += "; epoch 0 is the head before training"
	}
	return loss, score, note + ".", nil
}

// curve draws one point per epoch over the epochs xr, joined by a line, with a dashed vertical
// line at the best epoch (and, with markBest, a ring on its point).
func curve(title, ylabel string, xy plotter.XYs, xr [2]float64, best int, markBest bool) ([]byte, error) {
	p := plot.New()
	for _, f := range []*font.Font{&p.Title.TextStyle.Font, &p.X.Label.TextStyle.Font, &p.Y.Label.TextStyle.Font,
		&p.X.Tick.Label.Font, &p.Y.Tick.Label.Font, &p.Legend.TextStyle.Font} {
		f.Variant = "Sans" // Liberation Sans, embedded in gonum/plot: no system font needed
	}
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Title.Padding = vg.Points(6)
	p.X.Label.Text = "epoch"
	p.Y.Label.Text = ylabel
	p.X.Tick.Marker = plot.TickerFunc(integerTicks)
	p.Y.Tick.Marker = plot.TickerFunc(distinctTicks)
	p.Add(plotter.NewGrid())
	line, points, err := plotter.NewLinePoints(xy)
	if err != nil {
		return nil, fmt.Errorf("report: plot %q: %w", title, err)
	}
	line.Color, line.Width = curveColor, vg.Points(1.6)
	points.Color, points.Shape, points.Radius = curveColor, draw.CircleGlyph{}, vg.Points(2.2)
	p.Add(line, points)

	// Ranges: pad degenerate ones so a single epoch or a flat curve still draws.
	p.X.Min, p.X.Max = xr[0], xr[1]
	if p.X.Max-p.X.Min < 1 {
		p.X.Min, p.X.Max = p.X.Min-0.5, p.X.Max+0.5
	}
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, v := range xy {
		ymin, ymax = math.Min(ymin, v.Y), math.Max(ymax, v.Y)
	}
	pad := 0.1 * (ymax - ymin)
	if pad == 0 {
		pad = math.Max(0.05*math.Abs(ymax), 0.01)
	}
	p.Y.Min, p.Y.Max = ymin-pad, ymax+pad

	if b := float64(best); b >= p.X.Min && b <= p.X.Max {
		vline, err := plotter.NewLine(plotter.XYs{{X: b, Y: p.Y.Min}, {X: b, Y: p.Y.Max}})
		if err != nil {
			return nil, fmt.Errorf("report: plot %q: %w", title, err)
		}
		vline.Color, vline.Width, vline.Dashes = bestColor, vg.Points(1.2), []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(vline)
		p.Legend.Add("best epoch "+strconv.Itoa(best), vline)
		if markBest {
			for _, v := range xy {
				if v.X != b {
					continue
				}
				ring, err := plotter.NewScatter(plotter.XYs{v})
				if err != nil {
					return nil, fmt.Errorf("report: plot %q: %w", title, err)
				}
				ring.Color, ring.Shape, ring.Radius = bestColor, draw.RingGlyph{}, vg.Points(5)
				p.Add(ring)
			}
		}
		p.Legend.Top = !markBest // the loss falls, the score rises: keep the legend off the curve
	}

	c := vgimg.NewWith(vgimg.UseWH(plotW, plotH), vgimg.UseDPI(plotDPI), vgimg.UseBackgroundColor(color.White))
	p.Draw(draw.New(c))
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("report: plot %q: %w", title, err)
	}
	return buf.Bytes(), nil
}

// integerTicks labels whole epochs with a step of 1, 2, 5, 10, 20, ... so that at most about 10
// labels show.
func integerTicks(lo, hi float64) []plot.Tick {
	span := math.Max(hi-lo, 1)
	step := 1.0
	for mult := 0; span/step > 10; mult++ {
		step = []float64{2, 5, 10}[mult%3] * math.Pow(10, float64(mult/3))
	}
	var ticks []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi+1e-9; v += step {
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.Itoa(int(math.Round(v)))})
	}
	return ticks
}

// distinctTicks are gonum's default ticks labelled with the fewest decimals that keep the major
// labels distinct (the default labels of a flat curve read "5.29, 5.29, 5.28").
func distinctTicks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for prec := 0; prec <= 8; prec++ {
		seen := map[string]bool{}
		ok := true
		for _, t := range ticks {
			if t.Label == "" {
				continue
			}
			l := strconv.FormatFloat(t.Value, 'f', prec, 64)
			// The label must also say the tick's value: with 0 decimals a tick at 0.5 would read "0".
			v, _ := strconv.ParseFloat(l, 64)
			ok = ok && !seen[l] && math.Abs(v-t.Value) <= 1e-9*math.Max(math.Abs(hi-lo), math.SmallestNonzeroFloat64)
			seen[l] = true
		}
		if ok {
			for i := range ticks {
				if ticks[i].Label != "" {
					ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', prec, 64)
				}
			}
			break
		}
	}
	return ticks
}
