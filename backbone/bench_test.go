package backbone

import (
	"testing"
	"time"
)

// BenchmarkFeaturesInt8 measures feature extraction of the shared int8 MobileNetV2 at batch 32
// with 2 onnxruntime threads, on already prepared random tensors (images/s).
func BenchmarkFeaturesInt8(b *testing.B) {
	ortLib(b)
	bb, err := Open(int8Model(b), Options{Threads: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
	const n = 32
	x := randomImages(5, n, 3, 224, 224)
	out := make([]float32, n*bb.Dim())
	if err := bb.Features(x, n, out); err != nil { // warm-up: binds the batch-32 tensors
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := bb.Features(x, n, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "images/s")
}
