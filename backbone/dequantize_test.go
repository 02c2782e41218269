package backbone

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/grouploss/pipeline/pipeline/data"
)

// TestUseFloat: auto converts quantized models on x86 CPUs without VNNI only; always and never
// do what they say; float models never change.
func TestUseFloat(t *testing.T) {
	q, f := &Info{Quantized: true}, &Info{}
	avx2 := CPUInfo{X86: true, AVX2: true}
	vnni := CPUInfo{X86: true, AVX2: true, AVX512VNNI: true}
	arm := CPUInfo{}
	for _, c := range []struct {
		mode string
		info *Info
		cpu  CPUInfo
		want bool
	}{
		{DequantizeAuto, q, avx2, true}, {"", q, avx2, true}, {DequantizeAuto, q, vnni, false}, {DequantizeAuto, q, arm, false},
		{DequantizeAlways, q, vnni, true}, {DequantizeNever, q, avx2, false}, {DequantizeAlways, f, avx2, false},
		{DequantizeAuto, f, avx2, false}, {DequantizeAuto, nil, avx2, false},
	} {
		if got := UseFloat(c.mode, c.info, c.cpu); got != c.want {
			t.Errorf("UseFloat(%q, quantized %v, %+v) = %v, want %v", c.mode, c.info != nil && c.info.Quantized, c.cpu, got, c.want)
		}
	}
}

// TestOpenDequantized: the shared int8 MobileNetV2 opened as its float conversion gives the
// same features up to the int8 rounding (on these 8 images mean cosine 0.977 to onnxruntime's
// int8 features on a CPU with VNNI; weights' TestMobileNetV2 measures the
// conversion itself) under another hash, so the two never share a feature cache.
func TestOpenDequantized(t *testing.T) {
	lib := ortLib(t)
	model := int8Model(t)
	i8, err := Open(model, Options{LibraryPath: lib, Threads: 1, Dequantize: DequantizeNever})
	if err != nil {
		t.Fatal(err)
	}
	defer i8.Close()
	fl, err := Open(model, Options{LibraryPath: lib, Threads: 1, Dequantize: DequantizeAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	if i8.Dequantized() || !fl.Dequantized() || i8.Hash() == fl.Hash() || fl.Dim() != 1280 || fl.CutInfo().Feature != i8.CutInfo().Feature {
		t.Fatalf("int8: dequantized %v hash %s; float: dequantized %v hash %s dim %d feature %q",
			i8.Dequantized(), i8.Hash(), fl.Dequantized(), fl.Hash(), fl.Dim(), fl.CutInfo().Feature)
	}
	paths, _ := filepath.Glob(filepath.Join(sharedDir(t), "data", "cub100", "images", "*", "000[0-1].jpg"))
	if len(paths) < 8 {
		t.Fatalf("CUB images: %d", len(paths))
	}
	paths = paths[:8]
	p := data.DefaultPreprocess()
	in := make([]float32, len(paths)*p.Size())
	for i, path := range paths {
		if err := p.TensorFile(path, in[i*p.Size():(i+1)*p.Size()]); err != nil {
			t.Fatal(err)
		}
	}
	a, b := make([]float32, len(paths)*1280), make([]float32, len(paths)*1280)
	if err := i8.Features(in, len(paths), a); err != nil {
		t.Fatal(err)
	}
	if err := fl.Features(in, len(paths), b); err != nil {
		t.Fatal(err)
	}
	mean := 0.0
	for i := range paths {
		var dot, na, nb float64
		for j := range 1280 {
			x, y := float64(a[i*1280+j]), float64(b[i*1280+j])
			dot, na, nb = dot+x*y, na+x*x, nb+y*y
		}
		mean += dot / math.Sqrt(na*nb) / float64(len(paths))
	}
	cpu := CPU()
	t.Logf("mean cosine int8 vs float features: %.4f (VNNI %v)", mean, cpu.VNNI())
	if min := map[bool]float64{true: 0.97, false: 0.85}[cpu.VNNI() || !cpu.X86]; mean < min {
		t.Errorf("mean cosine %.4f < %.2f", mean, min)
	}
}
