package export

import (
	"fmt"
	"math"
)

// Calibration methods: how an activation's quantization range is chosen from the values it took
// on the calibration images (onnxruntime's CalibrationMethod names).
const (
	CalibMinMax     = "minmax"     // the observed minimum and maximum
	CalibPercentile = "percentile" // |x| clipped at its 99.999th percentile
	CalibEntropy    = "entropy"    // |x| clipped where the KL divergence of the 8-bit histogram is least
)

// CalibrationMethods lists the methods Calibrator accepts.
var CalibrationMethods = []string{CalibMinMax, CalibPercentile, CalibEntropy}

const (
	histBins   = 2048
	percentile = 99.999
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
func (c *Calibrator) Observe(t string, x []float32) error {
	s := c.stats[t]
	if s == nil {
		return fmt.Errorf("export: calibrate: unknown tensor %q", t)
	}
	var lo, hi, amax float64 = math.Inf(1), math.Inf(-1), 0
	for _, v := range x {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("export: calibrate: tensor %q holds %v", t, v)
		}
		lo, hi = math.Min(lo, f), math.Max(hi, f)
		amax = math.Max(amax, math.Abs(f))
	}
	if len(x) == 0 {
		return nil
	}
	s.min, s.max = math.Min(s.min, lo), math.Max(s.max, hi)
	if amax > s.absMax {
		s.rebin(amax)
	}
	if s.absMax == 0 {
		s.hist[0] += float64(len(x))
	} else {
		k := float64(histBins) / s.absMax
		for _, v := range x {
			b := int(math.Abs(float64(v)) * k)
			if b >= histBins {
				b = histBins - 1
			}
			s.hist[b]++
		}
	}
	s.n += len(x)
	return nil
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
