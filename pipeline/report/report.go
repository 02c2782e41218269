// Package report writes a run's report.html: one self-contained HTML file (inline CSS, images as
// data: URIs, no script, no network) with the run information, the metrics table, the training
// curves and a grid of retrieval examples from the trained embeddings.
package report

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html/template"
	"math"
	"time"

	"github.com/grouploss/pipeline/internal/atomicfile"
	"github.com/grouploss/pipeline/pipeline/metrics"
	"github.com/grouploss/pipeline/pipeline/train"
)

// Report is what report.html shows. Every field may be left empty: its section then says so.
type Report struct {
	Title string    // page heading; "" means "Run report"
	Date  time.Time // when the run finished; the zero time is not shown
	// Info is the run information (data source, classes, machine, versions, ...), shown in order.
	Info     []Field
	Warnings []string
	// Metrics are the rows of the metrics table in order, e.g. baseline, baseline with flip
	// averaging, trained.
	Metrics []Row
	// EvalNote describes what Metrics were measured on, e.g. "2952 images of 50 held-out classes".
	EvalNote string
	// History is the training history: epoch 0 (if present) holds only the validation score
	// before training, epochs >= 1 the mean loss and the validation score after the epoch.
	History []train.EpochStats
	// ScoreName names History's validation score (a fraction, plotted in %), e.g. "validation
	// MAP@R"; "" means the run had no validation score and only the loss is plotted.
	ScoreName string
	BestEpoch int // the selected epoch, marked on both curves
	Examples  Examples
}

// Field is one line of the run information.
type Field struct{ Name, Value string }

// Row is one line of the metrics table.
type Row struct {
	Name   string
	Result metrics.Result
}

// Examples are the evaluated images the retrieval grid is drawn from: a deterministic choice of
// up to 8 queries from distinct classes, each with its 5 nearest other images.
type Examples struct {
	Paths   []string // image file of each of the n items (JPEG or PNG)
	Labels  []int    // class id of each item
	Classes []string // class names indexed by class id; a missing name shows as the id
	// Emb is the n×Dim row-major float32 embeddings of the items (the trained ones); the
	// neighbours are computed from it (Euclidean after L2 normalization) unless Neighbors is set.
	Emb []float32
	Dim int
	// Neighbors, when set, is the n×K row-major neighbour lists (item indices, nearest first).
	Neighbors []int
	K         int
}

// Write renders r and writes it atomically to path (temp file in the same folder, fsync, rename).
// Images that cannot be read show as grey placeholders; errors are returned for inconsistent
// inputs (lengths, out-of-range indices) and for write failures.
func Write(path string, r Report) error {
	b, err := render(r)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(path, "report", b); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// page is the template's view of a Report.
type page struct {
	Title, Date, EvalNote string
	Info                  []Field
	Warnings              []string
	Columns               []string
	Rows                  []pageRow
	LossPlot, ScorePlot   template.HTMLAttr
	PlotNote              string
	Queries               []query
	GridNote              string
}

type pageRow struct {
	Name  string
	Cells []cell
}

type cell struct {
	Text string
	Best bool
}

type query struct {
	Query     thumb
	Neighbors []thumb
	Hits, K   int
}

type thumb struct {
	Src     template.HTMLAttr
	Caption string
	Title   string // full class name and file
	Class   string // CSS class: query, hit or miss
	Rank    int
}

var columns = []string{"R@1", "R@2", "R@4", "R@8", "NMI", "MAP@R", "R-precision"}

func values(m metrics.Result) []float64 {
	return []float64{m.RecallAt1, m.RecallAt2, m.RecallAt4, m.RecallAt8, m.NMI, m.MAPAtR, m.RPrecision}
}

func render(r Report) ([]byte, error) {
	p := page{Title: r.Title, EvalNote: r.EvalNote, Info: r.Info, Warnings: r.Warnings, Columns: columns}
	if p.Title == "" {
		p.Title = "Run report"
	}
	if !r.Date.IsZero() {
		p.Date = r.Date.Format("2006-01-02 15:04:05 MST")
	}
	p.Rows = metricRows(r.Metrics)

	loss, score, note, err := plots(r.History, r.ScoreName, r.BestEpoch)
	if err != nil {
		return nil, err
	}
	p.PlotNote = note
	if loss != nil {
		p.LossPlot = srcAttr("image/png", loss)
	}
	if score != nil {
		p.ScorePlot = srcAttr("image/png", score)
	}

	if p.Queries, p.GridNote, err = grid(r.Examples); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, p); err != nil {
		return nil, fmt.Errorf("report: render: %w", err)
	}
	return buf.Bytes(), nil
}

// metricRows formats the table in % with 2 decimals and marks the best value of each column.
func metricRows(rows []Row) []pageRow {
	best := make([]float64, len(columns))
	for i := range best {
		best[i] = math.Inf(-1)
	}
	for _, r := range rows {
		for i, v := range values(r.Result) {
			best[i] = max(best[i], round2(100*v))
		}
	}
	out := make([]pageRow, len(rows))
	for k, r := range rows {
		out[k].Name = r.Name
		for i, v := range values(r.Result) {
			out[k].Cells = append(out[k].Cells, cell{Text: fmt.Sprintf("%.2f", 100*v), Best: len(rows) > 1 && round2(100*v) == best[i]})
		}
	}
	return out
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// srcAttr is the attribute src="data:<mime>;base64,...". It is built here rather than by the
// template, which would escape every '+' of the base64 text as "&#43;" (valid, but 6% larger).
// Base64 text holds only [A-Za-z0-9+/=], so the attribute is safe as it is.
func srcAttr(mime string, b []byte) template.HTMLAttr {
	return template.HTMLAttr(`src="data:` + mime + ";base64," + base64.StdEncoding.EncodeToString(b) + `"`)
}

var pageTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d2330; background: #f6f7f9; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 24px; margin: 0 0 2px; }
h2 { font-size: 17px; margin: 0 0 10px; }
.sub { color: #5b6475; margin: 0 0 16px; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 14px 18px; margin: 0 0 16px; }
table { border-collapse: collapse; }
table.info td { padding: 2px 14px 2px 0; vertical-align: top; }
table.info td:first-child { color: #5b6475; white-space: nowrap; }
table.info td:last-child { word-break: break-all; }
table.metrics th, table.metrics td { padding: 5px 12px; border-bottom: 1px solid #e6e9ee; text-align: right; font-variant-numeric: tabular-nums; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
table.metrics thead th { border-bottom: 2px solid #c9ced8; }
table.metrics td.best { font-weight: 700; }
.note { color: #5b6475; font-size: 13px; margin: 8px 0 0; }
.warn { color: #8a5a00; background: #fff6e0; border: 1px solid #f0d9a0; border-radius: 4px; padding: 6px 10px; margin: 10px 0 0; }
.warn ul { margin: 0; padding-left: 18px; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
.plots figure { margin: 0; flex: 1 1 480px; max-width: 560px; }
.plots img { width: 100%; height: auto; display: block; }
.grid .q { display: flex; align-items: flex-start; gap: 8px; padding: 8px 0; border-bottom: 1px solid #eef0f3; }
.grid .q:last-child { border-bottom: 0; }
.grid figure { margin: 0; width: 138px; text-align: center; }
.grid img { width: 128px; height: 128px; object-fit: contain; background: #eef0f3; border: 4px solid #9aa3b2; border-radius: 3px; display: block; margin: 0 auto; }
.grid figure.query img { border-color: #3b6fd8; }
.grid figure.hit img { border-color: #1f9d3a; }
.grid figure.miss img { border-color: #d33a2c; }
.grid figcaption { font-size: 11px; line-height: 1.25; margin-top: 3px; overflow-wrap: anywhere; max-height: 2.5em; overflow: hidden; }
.grid .arrow { align-self: center; color: #9aa3b2; font-size: 22px; padding: 0 4px; }
.grid .score { align-self: center; color: #5b6475; font-size: 13px; width: 90px; text-align: right; }
.legend span { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px; margin: 0 4px 0 12px; }
</style>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
<p class="sub">{{if .Date}}{{.Date}}{{end}}</p>

<section id="run">
<h2>Run</h2>
{{if .Info}}<table class="info">
{{range .Info}}<tr><td>{{.Name}}</td><td>{{.Value}}</td></tr>
{{end}}</table>{{else}}<p class="note">No run information.</p>{{end}}
{{if .Warnings}}<div class="warn"><ul>{{range .Warnings}}<li>{{.}}</li>{{end}}</ul></div>{{end}}
</section>

<section id="metrics">
<h2>Evaluation (%)</h2>
{{if .Rows}}<table class="metrics">
<thead><tr><th></th>{{range .Columns}}<th>{{.}}</th>{{end}}</tr></thead>
<tbody>
{{range .Rows}}<tr><td>{{.Name}}</td>{{range .Cells}}<td{{if .Best}} class="best"{{end}}>{{.Text}}</td>{{end}}</tr>
{{end}}</tbody>
</table>{{else}}<p class="note">No metrics.</p>{{end}}
{{if .EvalNote}}<p class="note">{{.EvalNote}}</p>{{end}}
</section>

<section id="training">
<h2>Training</h2>
{{if or .LossPlot .ScorePlot}}<div class="plots">
{{if .LossPlot}}<figure><img class="plot" id="loss-plot" alt="training loss per epoch" {{.LossPlot}}></figure>{{end}}
{{if .ScorePlot}}<figure><img class="plot" id="score-plot" alt="validation score per epoch" {{.ScorePlot}}></figure>{{end}}
</div>{{end}}
{{if .PlotNote}}<p class="note">{{.PlotNote}}</p>{{end}}
</section>

<section id="examples" class="grid">
<h2>Retrieval examples</h2>
{{if .Queries}}<p class="note legend">Query, then its 5 nearest neighbours by the trained embedding, nearest first:<span style="background:#3b6fd8"></span>query<span style="background:#1f9d3a"></span>same class<span style="background:#d33a2c"></span>different class</p>
{{range .Queries}}<div class="q">
<figure class="{{.Query.Class}}"><img alt="query" title="{{.Query.Title}}" {{.Query.Src}}><figcaption>{{.Query.Caption}}</figcaption></figure>
<div class="arrow">&rarr;</div>
{{range .Neighbors}}<figure class="{{.Class}}"><img alt="neighbour {{.Rank}}" title="{{.Title}}" {{.Src}}><figcaption>{{.Rank}}. {{.Caption}}</figcaption></figure>
{{end}}<div class="score">{{.Hits}}/{{.K}}<br>same class</div>
</div>
{{end}}{{end}}
{{if .GridNote}}<p class="note">{{.GridNote}}</p>{{end}}
</section>
</main>
</body>
</html>
`))
