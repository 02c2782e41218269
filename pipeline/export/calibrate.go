package export

import (
	"fmt"
	"math"
)

// Calibration methods: how an activation's quantization range is chosen from the values it took
// on the calibration images (onnxruntime's CalibrationMethod names).
const (
	CalibMinMax     = "minmax"     // the observed minimum and maximum
	CalibPercentile = "percentile" // |x| clipped at its 99.995th percentile
	CalibEntropy    = "entropy"    // |x| clipped where the KL divergence of the 8-bit histogram is least
)

// CalibrationMethods lists the methods Calibrator accepts.
var CalibrationMethods = []string{CalibMinMax, CalibPercentile, CalibEntropy}

const (
	histBins = 2048
	// percentile: of 99.95, 99.99, 99.995, 99.999 and 99.9999, 99.995 lost the least R@1 and NMI
	// together on the default model's 3 seeds (README, "Deploying").
	percentile = 99.995
)

// Calibrator accumulates, per tensor, the minimum, maximum and a histogram of |x| over the
// calibration batches, and turns them into quantization ranges (Ranges). The histogram's range
// grows with the largest |x| seen (old counts are moved to the wider bins), so one pass suffices.
type Calibrator struct {
	stats map[string]*tensorStats
	order []string
}

type tensorStats struct {
	min, max float64
	absMax   float64   // the histogram covers [0, absMax]
	hist     []float64 // histBins counts of |x|
	n        int
	scratch  *[4][histBins]uint32
}

// NewCalibrator returns a calibrator for the named tensors.
func NewCalibrator(tensors []string) *Calibrator {
	c := &Calibrator{stats: make(map[string]*tensorStats, len(tensors)), order: append([]string(nil), tensors...)}
	for _, t := range tensors {
		c.stats[t] = &tensorStats{min: math.Inf(1), max: math.Inf(-1), hist: make([]float64, histBins)}
	}
	return c
}

// Observe adds the values x of tensor t. Non-finite values are an error naming the tensor.
// Observe may run concurrently for different tensors.
func (c *Calibrator) Observe(t string, x []float32) error {
	s := c.stats[t]
	if s == nil {
		return fmt.Errorf("export: calibrate: unknown tensor %q", t)
	}
	if len(x) == 0 {
		return nil
	}
	lo, hi, ok := rangeOf(x)
	if !ok {
		for _, v := range x {
			if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
				return fmt.Errorf("export: calibrate: tensor %q holds %v", t, v)
			}
		}
	}
	s.min, s.max = math.Min(s.min, float64(lo)), math.Max(s.max, float64(hi))
	if amax := math.Max(-float64(lo), float64(hi)); amax > s.absMax {
		s.rebin(amax)
	}
	if s.absMax == 0 {
		s.hist[0] += float64(len(x))
	} else {
		s.count(x)
	}
	s.n += len(x)
	return nil
}

// rangeOf returns the smallest and largest of x (not empty), and whether all are finite: x·0 is
// ±0 for finite x and NaN otherwise, summed in four lanes beside the comparisons.
func rangeOf(x []float32) (lo, hi float32, finite bool) {
	lo, hi = x[0], x[0]
	var c0, c1, c2, c3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		v0, v1, v2, v3 := x[i], x[i+1], x[i+2], x[i+3]
		c0 += v0 * 0
		c1 += v1 * 0
		c2 += v2 * 0
		c3 += v3 * 0
		lo, hi = min(lo, v0, v1, v2, v3), max(hi, v0, v1, v2, v3)
	}
	for ; i < len(x); i++ {
		c0 += x[i] * 0
		lo, hi = min(lo, x[i]), max(hi, x[i])
	}
	return lo, hi, c0+c1+c2+c3 == 0
}

// count adds x to the histogram of |x| over [0, absMax]. The counts go to four interleaved
// histograms of integers first: consecutive values in one bin (the zeros after a ReLU, half of
// most activations) would otherwise wait for each other's increment.
func (s *tensorStats) count(x []float32) {
	if s.scratch == nil {
		s.scratch = new([4][histBins]uint32)
	}
	h := s.scratch
	k := float64(histBins) / s.absMax
	i := 0
	bin := func(v float32) int { return min(int(math.Abs(float64(v))*k), histBins-1) }
	for ; i+4 <= len(x); i += 4 {
		h[0][bin(x[i])]++
		h[1][bin(x[i+1])]++
		h[2][bin(x[i+2])]++
		h[3][bin(x[i+3])]++
	}
	for ; i < len(x); i++ {
		h[0][bin(x[i])]++
	}
	for b := range s.hist {
		s.hist[b] += float64(h[0][b]) + float64(h[1][b]) + float64(h[2][b]) + float64(h[3][b])
	}
	*h = [4][histBins]uint32{}
}

// rebin widens the histogram to [0, amax], moving each old bin's count to the bin of its centre.
func (s *tensorStats) rebin(amax float64) {
	old, oldMax := s.hist, s.absMax
	s.hist, s.absMax = make([]float64, histBins), amax
	for i, cnt := range old {
		if cnt == 0 {
			continue
		}
		centre := 0.0
		if oldMax > 0 {
			centre = (float64(i) + 0.5) * oldMax / histBins
		}
		s.hist[min(int(centre/amax*histBins), histBins-1)] += cnt
	}
}

// Samples returns the number of values observed for tensor t.
func (c *Calibrator) Samples(t string) int {
	if s := c.stats[t]; s != nil {
		return s.n
	}
	return 0
}

// Ranges returns each tensor's range by method (CalibMinMax, CalibPercentile or CalibEntropy).
// Tensors never observed are an error.
func (c *Calibrator) Ranges(method string) (map[string]Range, error) {
	out := make(map[string]Range, len(c.stats))
	for _, t := range c.order {
		s := c.stats[t]
		if s.n == 0 {
			return nil, fmt.Errorf("export: calibrate: tensor %q was never observed", t)
		}
		var clip float64
		switch method {
		case CalibMinMax:
			clip = s.absMax
		case CalibPercentile:
			clip = s.percentile(percentile)
		case CalibEntropy:
			levels := 128 // a signed tensor spends half the 8-bit levels on each side
			if s.min >= 0 {
				levels = 255
			}
			clip = s.entropyThreshold(levels)
		default:
			return nil, fmt.Errorf("export: calibrate: unknown method %q (want one of %v)", method, CalibrationMethods)
		}
		lo, hi := math.Max(s.min, -clip), math.Min(s.max, clip)
		if lo > hi { // every value lies beyond the clip on one side (e.g. one value): keep them all
			lo, hi = s.min, s.max
		}
		out[t] = Range{Min: float32(lo), Max: float32(hi)}
	}
	return out, nil
}

// percentile returns the value below which p percent of |x| lies (the upper edge of its bin).
func (s *tensorStats) percentile(p float64) float64 {
	target := float64(s.n) * p / 100
	var acc float64
	for i, cnt := range s.hist {
		acc += cnt
		if acc >= target {
			return float64(i+1) * s.absMax / histBins
		}
	}
	return s.absMax
}

// entropyThreshold is TensorRT's calibration (the "entropy" method of onnxruntime's quantizer):
// among thresholds i bins wide, i >= levels, pick the one whose clipped histogram P (the tail
// added to the last bin) loses least information, KL(P || Q), when merged into levels
// quantization bins Q (each expanded back over the non-empty bins it covers).
func (s *tensorStats) entropyThreshold(levels int) float64 {
	if s.absMax == 0 {
		return 0
	}
	h := s.hist
	total := 0.0
	for _, v := range h {
		total += v
	}
	best, bestI := math.Inf(1), histBins
	p := make([]float64, histBins)
	q := make([]float64, histBins)
	for i := levels; i <= histBins; i += 16 {
		copy(p, h[:i])
		tail := 0.0
		for _, v := range h[i:] {
			tail += v
		}
		p[i-1] += tail
		// Q: h[:i] merged into levels bins, each spread evenly over its non-empty source bins.
		for j := range q[:i] {
			q[j] = 0
		}
		for k := 0; k < levels; k++ {
			start, end := k*i/levels, (k+1)*i/levels
			sum, nonzero := 0.0, 0
			for j := start; j < end; j++ {
				sum += h[j]
				if h[j] > 0 {
					nonzero++
				}
			}
			if j := end - 1; k == levels-1 {
				sum += tail
				if tail > 0 && h[j] == 0 {
					nonzero++
				}
			}
			for j := start; j < end; j++ {
				if p[j] > 0 && nonzero > 0 {
					q[j] = sum / float64(nonzero)
				}
			}
		}
		if kl := klDivergence(p[:i], q[:i], total); kl < best {
			best, bestI = kl, i
		}
	}
	return float64(bestI) * s.absMax / histBins
}

// klDivergence is KL(P || Q) of two histograms of the same total mass.
func klDivergence(p, q []float64, total float64) float64 {
	var kl float64
	for j, pv := range p {
		if pv == 0 {
			continue
		}
		if q[j] == 0 {
			return math.Inf(1)
		}
		kl += pv / total * math.Log(pv/q[j])
	}
	return kl
}
