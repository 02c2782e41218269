package data

import (
	"context"
	"errors"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// colorOf is the uniform colour of test image i; its red value identifies it.
func colorOf(i int) color.NRGBA { return color.NRGBA{uint8(i), uint8(255 - i), 7, 255} }

// testDataset writes n small uniform images (PNG and JPEG alternating; JPEG values are not exact,
// so only red of PNGs is checked) and returns them as a dataset.
func testDataset(t testing.TB, n int) *Dataset {
	dir := t.TempDir()
	ds := &Dataset{Root: dir, Classes: []string{"c"}}
	for i := range n {
		name := fmt.Sprintf("img%03d.png", i)
		writeImage(t, filepath.Join(dir, name), uniform(12+i%5, 9, colorOf(i)))
		ds.Items = append(ds.Items, Item{Path: name, Class: "c"})
	}
	return ds
}

func smallPre() Preprocess {
	p := identity(DefaultPreprocess())
	p.Width, p.Height = 8, 6
	return p
}

// checkRows checks that row r of b.Data is the image of b.Items[r].
func checkRows(t *testing.T, p Preprocess, b Batch) {
	t.Helper()
	if len(b.Items) != b.N || len(b.Data) != b.N*p.Size() {
		t.Fatalf("batch at %d: N %d, %d items, %d floats", b.Start, b.N, len(b.Items), len(b.Data))
	}
	for r, item := range b.Items {
		row := b.Data[r*p.Size() : (r+1)*p.Size()]
		want := colorOf(item)
		if math.Abs(float64(row[0])-float64(want.R)) > 1e-3 || math.Abs(float64(row[p.Width*p.Height])-float64(want.G)) > 1e-3 {
			t.Fatalf("batch at %d row %d: R,G = %v,%v, want item %d's %d,%d", b.Start, r, row[0],
				row[p.Width*p.Height], item, want.R, want.G)
		}
	}
}

// waitGoroutines waits until the goroutine count is back to base.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBatchesInOrder(t *testing.T) {
	ds := testDataset(t, 23)
	p := smallPre()
	items := []int{22, 0, 5, 5, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // on failure, release the workers
	var got []int
	next := 0
	for b := range Batches(ctx, ds, items, p, 5, 4) {
		if b.Err != nil {
			t.Fatal(b.Err)
		}
		if b.Start != next {
			t.Fatalf("batch starts at %d, want %d", b.Start, next)
		}
		checkRows(t, p, b)
		got = append(got, b.Items...)
		next += b.N
	}
	if !slices.Equal(got, items) {
		t.Fatalf("items %v, want %v", got, items)
	}
	waitGoroutines(t, base)
}

func TestBatchesBadImage(t *testing.T) {
	ds := testDataset(t, 10)
	writeFile(t, filepath.Join(ds.Root, "bad.png"), "not a png")
	ds.Items = append(ds.Items, Item{Path: "bad.png"})
	bad := len(ds.Items) - 1
	items := []int{0, 1, 2, 3, bad, 4, 5, 6, 7, 8, 9}
	p := smallPre()

	t.Run("fail", func(t *testing.T) {
		base := runtime.NumGoroutine()
		var batches []Batch
		for b := range (Loader{Preprocess: p, BatchSize: 3, Workers: 2}).Batches(context.Background(), ds, items) {
			batches = append(batches, b)
		}
		last := batches[len(batches)-1]
		var ie *ImageError
		if len(batches) != 2 || !errors.As(last.Err, &ie) || ie.Item != bad || ie.Path != ds.Resolve(bad) ||
			!strings.Contains(last.Err.Error(), "bad.png") {
			t.Fatalf("%d batches, last error %v; want 1 good batch then an *ImageError naming bad.png", len(batches), last.Err)
		}
		checkRows(t, p, batches[0])
		waitGoroutines(t, base)
	})
	t.Run("skip", func(t *testing.T) {
		base := runtime.NumGoroutine()
		var got []int
		var skipped []*ImageError
		l := Loader{Preprocess: p, BatchSize: 3, Workers: 2, SkipBad: true}
		err := l.Each(context.Background(), ds, items, func(b Batch) error {
			checkRows(t, p, b)
			got = append(got, b.Items...)
			skipped = append(skipped, b.Skipped...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := slices.DeleteFunc(slices.Clone(items), func(i int) bool { return i == bad }); !slices.Equal(got, want) {
			t.Errorf("items %v, want %v", got, want)
		}
		if len(skipped) != 1 || skipped[0].Item != bad || filepath.Base(skipped[0].Path) != "bad.png" {
			t.Errorf("skipped %v, want bad.png", skipped)
		}
		waitGoroutines(t, base)
	})
}

func TestBatchesCancel(t *testing.T) {
	ds := testDataset(t, 40)
	p := smallPre()
	items := make([]int, 400)
	for i := range items {
		items[i] = i % 40
	}
	base := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := 0
	for range Batches(ctx, ds, items, p, 4, 3) {
		n++
	}
	if n > 3 { // at most the batches already in flight
		t.Errorf("%d batches after cancelling first", n)
	}
	waitGoroutines(t, base)

	// Cancelled while the consumer holds a batch and the workers are blocked ahead.
	ctx, cancel = context.WithCancel(context.Background())
	ch := Batches(ctx, ds, items, p, 4, 3)
	<-ch
	time.Sleep(20 * time.Millisecond)
	cancel()
	for range ch {
	}
	waitGoroutines(t, base)

	// Each reports the cancellation, and fn's own error.
	ctx, cancel = context.WithCancel(context.Background())
	l := Loader{Preprocess: p, BatchSize: 4, Workers: 2}
	err := l.Each(ctx, ds, items, func(b Batch) error {
		if b.Start == 8 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Each after cancel: %v, want context.Canceled", err)
	}
	stop := errors.New("stop")
	if err := l.Each(context.Background(), ds, items, func(Batch) error { return stop }); err != stop {
		t.Errorf("Each: %v, want fn's error", err)
	}
	waitGoroutines(t, base)
}

// TestBatchesLookAhead: while the consumer holds batch 0, exactly Prefetch more batches get decoded.
func TestBatchesLookAhead(t *testing.T) {
	ds := testDataset(t, 20)
	var decoded atomic.Int32
	testHookDecoded = func(int) { decoded.Add(1) }
	defer func() { testHookDecoded = nil }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := Loader{Preprocess: smallPre(), BatchSize: 2, Workers: 3, Prefetch: 2}
	ch := l.Batches(ctx, ds, make([]int, 20))
	<-ch
	const want = 2 * (1 + 2) // the held batch and two ahead
	deadline := time.Now().Add(2 * time.Second)
	for decoded.Load() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if got := decoded.Load(); got != want {
		t.Errorf("%d images decoded while the consumer holds the first batch, want %d", got, want)
	}
	cancel()
	for range ch {
	}
}

func TestBatchesInvalid(t *testing.T) {
	ds := testDataset(t, 2)
	for name, c := range map[string]struct {
		l     Loader
		items []int
		want  string
	}{
		"batch size": {Loader{Preprocess: smallPre()}, []int{0}, "batch size 0"},
		"range":      {Loader{Preprocess: smallPre(), BatchSize: 1}, []int{0, 2}, "items[1] = 2 out of range"},
		"preprocess": {Loader{BatchSize: 1}, []int{0}, "data: preprocess:"},
	} {
		var errs []error
		for b := range c.l.Batches(context.Background(), ds, c.items) {
			errs = append(errs, b.Err)
		}
		if len(errs) != 1 || errs[0] == nil || !strings.Contains(errs[0].Error(), c.want) {
			t.Errorf("%s: %v, want one error batch with %q", name, errs, c.want)
		}
	}
}

// BenchmarkDecodeCUB measures decode+preprocess throughput (images/s) of 200 CUB-100 images
// (227x227 JPEG -> 224x224) with 2 workers, batches of 32, with and without Batch.Release.
func BenchmarkDecodeCUB(b *testing.B) {
	ds, err := Load(cub100(b))
	if err != nil {
		b.Fatal(err)
	}
	items := make([]int, 200)
	for i := range items {
		items[i] = i * len(ds.Items) / len(items)
	}
	l := Loader{Preprocess: DefaultPreprocess(), BatchSize: 32, Workers: 2}
	for _, release := range []bool{false, true} {
		b.Run(fmt.Sprintf("release=%v", release), func(b *testing.B) {
			start := time.Now()
			n := 0
			for b.Loop() {
				err := l.Each(context.Background(), ds, items, func(bt Batch) error {
					n += bt.N
					if release {
						bt.Release()
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "images/s")
		})
	}
}

// BenchmarkTensor measures the preprocessing alone (colour conversion, resize, normalization) of
// one decoded 227x227 4:2:0 CUB-100 JPEG to 224x224.
func BenchmarkTensor(b *testing.B) {
	img, err := DecodeFile(filepath.Join(cub100(b), "images/Black_footed_Albatross/0000.jpg"), 0)
	if err != nil {
		b.Fatal(err)
	}
	p := DefaultPreprocess()
	var s scratch
	dst := make([]float32, p.Size())
	for b.Loop() {
		if err := s.tensor(p, img, dst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFileCUB measures one goroutine's read + decode + preprocess of a 227x227 CUB-100 JPEG to
// 224x224 (libjpeg-turbo and the C kernel in cgo builds, image/jpeg and Go with -tags nolibjpeg).
func BenchmarkFileCUB(b *testing.B) {
	path := filepath.Join(cub100(b), "images/Black_footed_Albatross/0000.jpg")
	p := DefaultPreprocess()
	var s scratch
	dst := make([]float32, p.Size())
	for b.Loop() {
		if err := s.file(p, path, dst); err != nil {
			b.Fatal(err)
		}
	}
}
