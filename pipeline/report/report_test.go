package report

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/grouploss/pipeline/pipeline/metrics"
	"github.com/grouploss/pipeline/pipeline/train"
)

var classColors = []color.RGBA{{200, 60, 40, 255}, {40, 150, 70, 255}, {50, 90, 200, 255}, {220, 180, 30, 255}}

// synthetic writes perClass images of each of the 4 classes into dir (even items PNG 160×120,
// odd items JPEG 120×160, a class colour with a light square placed by the item index) and
// returns the examples with 2-d embeddings: each class on its own direction, except that item 1
// (class 0) is put on class 1's direction, so it is retrieved wrongly.
func synthetic(t *testing.T, dir string, perClass int) Examples {
	t.Helper()
	ex := Examples{Classes: []string{"Black_footed_Albatross", "Laysan_Albatross", "<b>Sooty</b>", "Crested_Auklet"}, Dim: 2}
	for c := range 4 {
		for k := range perClass {
			i := len(ex.Paths)
			w, h, ext := 160, 120, ".png"
			if i%2 == 1 {
				w, h, ext = 120, 160, ".jpg"
			}
			img := image.NewRGBA(image.Rect(0, 0, w, h))
			for p := 0; p < len(img.Pix); p += 4 {
				copy(img.Pix[p:], []uint8{classColors[c].R, classColors[c].G, classColors[c].B, 255})
			}
			for y := 10 + 8*k; y < 40+8*k; y++ {
				for x := 20; x < 60; x++ {
					img.Set(x, y, color.White)
				}
			}
			path := filepath.Join(dir, fmt.Sprintf("c%d_%d%s", c, k, ext))
			var buf bytes.Buffer
			var err error
			if ext == ".png" {
				err = png.Encode(&buf, img)
			} else {
				err = jpeg.Encode(&buf, img, nil)
			}
			if err == nil {
				err = os.WriteFile(path, buf.Bytes(), 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
			ex.Paths = append(ex.Paths, path)
			ex.Labels = append(ex.Labels, c)
			dirc := c
			if i == 1 {
				dirc = 1
			}
			a := float64(dirc)*math.Pi/2 + 0.01*float64(k)
			ex.Emb = append(ex.Emb, float32(math.Cos(a)), float32(math.Sin(a)))
		}
	}
	return ex
}

func testReport(ex Examples) Report {
	return Report{
		Title: "CUB test run",
		Date:  time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
		Info: []Field{{"data", "/data/manifest.csv"}, {"CPU", "AMD EPYC (AVX-512 VNNI: yes)"},
			{"onnxruntime", "1.30.0"}, {"tool version", "0.1.0"}},
		Warnings: []string{"int8 on a CPU without VNNI"},
		Metrics: []Row{
			{"baseline (raw features)", metrics.Result{RecallAt1: 0.61234, RecallAt2: 0.7, RecallAt4: 0.8, RecallAt8: 0.9, NMI: 0.55, MAPAtR: 0.2, RPrecision: 0.3}},
			{"baseline + flip averaging", metrics.Result{RecallAt1: 0.62, RecallAt2: 0.71, RecallAt4: 0.81, RecallAt8: 0.91, NMI: 0.56, MAPAtR: 0.21, RPrecision: 0.31}},
			{"trained", metrics.Result{RecallAt1: 0.70456, RecallAt2: 0.8, RecallAt4: 0.88, RecallAt8: 0.93, NMI: 0.6, MAPAtR: 0.25, RPrecision: 0.35}},
		},
		EvalNote: "12 images of 4 held-out classes",
		History: []train.EpochStats{{Epoch: 0, Score: 0.1}, {Epoch: 1, Loss: 3.2, Score: 0.2}, {Epoch: 2, Loss: 2.5, Score: 0.26},
			{Epoch: 3, Loss: 2.1, Score: 0.24}},
		ScoreName: "validation MAP@R",
		BestEpoch: 2,
		Examples:  ex,
	}
}

var (
	imgRe   = regexp.MustCompile(`<img [^>]*src="data:image/(jpeg|png);base64,([A-Za-z0-9+/=]+)"`)
	plotRe  = regexp.MustCompile(`<img class="plot" id="(loss|score)-plot"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"`)
	thumbRe = regexp.MustCompile(`<figure class="(query|hit|miss)"><img [^>]*title="([^"]*)" src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"`)
)

func writeRead(t *testing.T, r Report) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "report.html")
	if err := Write(path, r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(m) > 0 {
		t.Fatalf("temporary files left: %v", m)
	}
	return string(b)
}

func decode(t *testing.T, b64 string) image.Image {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// variance is the variance of the grey levels of img, 0 for a blank image.
func variance(img image.Image) float64 {
	var s, s2, n float64
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			g := float64(color.GrayModel.Convert(img.At(x, y)).(color.Gray).Y)
			s, s2, n = s+g, s2+g*g, n+1
		}
	}
	return s2/n - (s/n)*(s/n)
}

func TestWriteContents(t *testing.T) {
	ex := synthetic(t, t.TempDir(), 3)
	html := writeRead(t, testReport(ex))

	for _, want := range []string{"<title>CUB test run</title>", "2026-11-27 10:00:00 UTC", "/data/manifest.csv",
		"AMD EPYC (AVX-512 VNNI: yes)", "1.30.0", "int8 on a CPU without VNNI", "12 images of 4 held-out classes",
		"Selected epoch 2 by validation MAP@R (26.00%)",
		// table values in %, 2 decimals; the best of each column in bold
		"<td>baseline (raw features)</td><td>61.23</td><td>70.00</td><td>80.00</td><td>90.00</td><td>55.00</td><td>20.00</td><td>30.00</td>",
		`<td>trained</td><td class="best">70.46</td><td class="best">80.00</td>`,
		// class names with underscores as spaces, escaped
		"Black footed Albatross", "&lt;b&gt;Sooty&lt;/b&gt;",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(html, "<b>Sooty") {
		t.Error("class name not escaped")
	}
	for _, bad := range []string{"<script", "http://", "https://", "<link", "@import", "url("} {
		if strings.Contains(html, bad) {
			t.Errorf("report is not self-contained: it holds %q", bad)
		}
	}

	// Two plots, PNG at the drawing size, not blank.
	plotsFound := plotRe.FindAllStringSubmatch(html, -1)
	if len(plotsFound) != 2 || plotsFound[0][1] != "loss" || plotsFound[1][1] != "score" {
		t.Fatalf("want the loss and score plots, found %d", len(plotsFound))
	}
	for _, m := range plotsFound {
		img := decode(t, m[2])
		if b := img.Bounds(); b.Dx() != 1008 || b.Dy() != 594 {
			t.Errorf("%s plot is %v, want 1008x594", m[1], b.Size())
		}
		if v := variance(img); v < 50 {
			t.Errorf("%s plot looks blank: grey variance %.1f", m[1], v)
		}
	}

	// 8 queries (4 classes, twice each) with 5 neighbours: 48 thumbnails, + 2 plots.
	if n := len(imgRe.FindAllString(html, -1)); n != 8*6+2 {
		t.Errorf("%d <img> with data: URIs, want %d", n, 8*6+2)
	}
	thumbs := thumbRe.FindAllStringSubmatch(html, -1)
	if len(thumbs) != 48 {
		t.Fatalf("%d thumbnails, want 48", len(thumbs))
	}
	// Border classes match the labels: with 3 items per class on one direction each, a query of
	// class c has its 2 class mates nearest, then 3 others (items of the neighbouring direction).
	// Queries (middle item of each class, then the next): items 1, 2, 4, 5, 7, 8, 10, 11.
	// Item 1 lies on class 1's direction: its 3 nearest are class 1 (misses).
	first := thumbs[:6]
	if first[0][1] != "query" || !strings.HasPrefix(first[0][2], "Black footed Albatross — c0_1.jpg") {
		t.Errorf("first query is %q %q, want item 1 (c0_1.jpg)", first[0][1], first[0][2])
	}
	for r := 1; r <= 3; r++ {
		if first[r][1] != "miss" || !strings.HasPrefix(first[r][2], "Laysan Albatross") {
			t.Errorf("neighbour %d of item 1: %q %q, want a miss of class Laysan Albatross", r, first[r][1], first[r][2])
		}
	}
	// Per-query hit counts agree with the labels of the nearest neighbours.
	nb, err := metrics.Neighbors(ex.Emb, len(ex.Paths), 2, 5, metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, q := range []int{1, 2, 4, 5, 7, 8, 10, 11} {
		h := 0
		for _, j := range nb[q*5 : q*5+5] {
			if ex.Labels[j] == ex.Labels[q] {
				h++
			}
		}
		want = append(want, fmt.Sprintf("%d/5", h))
	}
	var got []string
	for _, m := range regexp.MustCompile(`<div class="score">(\d/\d)<br>`).FindAllStringSubmatch(html, -1) {
		got = append(got, m[1])
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("hit counts %v, want %v", got, want)
	}
	if h, m := strings.Count(html, `<figure class="hit">`), strings.Count(html, `<figure class="miss">`); h+m != 40 || m < 3 {
		t.Errorf("%d hits + %d misses, want 40 with at least 3 misses", h, m)
	}
	for _, m := range thumbs {
		img := decode(t, m[3])
		b := img.Bounds()
		if max(b.Dx(), b.Dy()) != thumbSize || min(b.Dx(), b.Dy()) != thumbSize*3/4 {
			t.Errorf("thumbnail %q is %v, want %d on the longer side, aspect kept", m[2], b.Size(), thumbSize)
		}
	}
	if strings.Contains(html, "could not be read") {
		t.Error("unexpected placeholder note")
	}
}

// Precomputed neighbour lists are used as given.
func TestWritePrecomputedNeighbors(t *testing.T) {
	ex := synthetic(t, t.TempDir(), 3)
	n := len(ex.Paths)
	ex.Emb, ex.Dim, ex.K = nil, 0, 2
	for i := range n { // the next two items, wrapping: same class for the first of a class
		ex.Neighbors = append(ex.Neighbors, (i+1)%n, (i+2)%n)
	}
	html := writeRead(t, testReport(ex))
	thumbs := thumbRe.FindAllStringSubmatch(html, -1)
	if len(thumbs) != 8*3 {
		t.Fatalf("%d thumbnails, want 24 (8 queries with 2 neighbours)", len(thumbs))
	}
	// Query item 1 (c0_1): neighbours c0_2 (hit) and c1_0 (miss).
	want := [][2]string{{"query", "c0_1.jpg"}, {"hit", "c0_2.png"}, {"miss", "c1_0.jpg"}}
	for r, w := range want {
		if thumbs[r][1] != w[0] || !strings.HasSuffix(thumbs[r][2], w[1]) {
			t.Errorf("thumbnail %d: %q %q, want %s %s", r, thumbs[r][1], thumbs[r][2], w[0], w[1])
		}
	}
}

// Without validation score only the loss is plotted; unreadable images become placeholders; an
// empty report still renders.
func TestWriteDegraded(t *testing.T) {
	dir := t.TempDir()
	ex := synthetic(t, dir, 3)
	ex.Paths[4] = filepath.Join(dir, "missing.jpg")
	r := testReport(ex)
	r.ScoreName = ""
	r.BestEpoch = 3
	html := writeRead(t, r)
	if p := plotRe.FindAllStringSubmatch(html, -1); len(p) != 1 || p[0][1] != "loss" {
		t.Errorf("want only the loss plot, found %d plots", len(p))
	}
	if !strings.Contains(html, "No validation score") {
		t.Error("missing note on the absent validation score")
	}
	if !strings.Contains(html, "could not be read") || !strings.Contains(html, "missing.jpg") {
		t.Error("missing note on the unreadable image")
	}
	if n := len(thumbRe.FindAllString(html, -1)); n != 48 {
		t.Errorf("%d thumbnails with a placeholder, want 48", n)
	}

	empty := writeRead(t, Report{})
	for _, want := range []string{"<title>Run report</title>", "No metrics.", "No training history", "No evaluated images"} {
		if !strings.Contains(empty, want) {
			t.Errorf("empty report lacks %q", want)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	ex := synthetic(t, t.TempDir(), 2)
	cases := []struct {
		name string
		edit func(*Examples)
		want string
	}{
		{"labels", func(e *Examples) { e.Labels = e.Labels[1:] }, "7 example labels for 8 images"},
		{"emb", func(e *Examples) { e.Emb = e.Emb[1:] }, "15 embedding values for 8 images of dimension 2"},
		{"nan", func(e *Examples) { e.Emb[3] = float32(math.NaN()) }, "report: retrieval examples: metrics:"},
		{"neighbors length", func(e *Examples) { e.Neighbors, e.K = make([]int, 5), 1 }, "5 neighbour entries for 8 images and K = 1"},
		{"neighbor range", func(e *Examples) { e.Neighbors, e.K = make([]int, 8), 1; e.Neighbors[3] = 8 }, "neighbour 0 of item 3 is 8, outside [0, 8)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := ex
			e.Labels = append([]int(nil), ex.Labels...)
			e.Emb = append([]float32(nil), ex.Emb...)
			c.edit(&e)
			path := filepath.Join(t.TempDir(), "report.html")
			err := Write(path, testReport(e))
			if err == nil || !strings.HasPrefix(err.Error(), "report: ") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if _, serr := os.Stat(path); serr == nil {
				t.Error("report written despite the error")
			}
		})
	}
	missing := filepath.Join(t.TempDir(), "no", "such", "report.html")
	err := Write(missing, Report{})
	if err == nil || !strings.HasPrefix(err.Error(), "report: ") || !strings.Contains(err.Error(), missing) {
		t.Errorf("write into a missing folder: %v", err)
	}
}

func TestPickQueries(t *testing.T) {
	// 20 classes of 5 items: 8 queries from classes 0, 2, 5, 7, 10, 12, 15, 17, each its middle item.
	var labels []int
	for c := range 20 {
		for range 5 {
			labels = append(labels, c)
		}
	}
	got := pickQueries(labels)
	want := []int{2, 12, 27, 37, 52, 62, 77, 87}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("queries %v, want %v", got, want)
	}
	// 3 items of 2 classes: every item once.
	if got := pickQueries([]int{1, 0, 1}); fmt.Sprint(got) != "[1 2 0]" {
		t.Errorf("queries %v, want [1 2 0]", got)
	}
}

func TestIntegerTicks(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		want   string
	}{{0, 3, "0 1 2 3"}, {0.5, 1.5, "1"}, {1, 25, "5 10 15 20 25"}, {0, 100, "0 10 20 30 40 50 60 70 80 90 100"}, {0, 150, "0 20 40 60 80 100 120 140"}} {
		var got []string
		for _, tk := range integerTicks(c.lo, c.hi) {
			got = append(got, tk.Label)
		}
		if s := strings.Join(got, " "); s != c.want {
			t.Errorf("ticks(%g, %g) = %s, want %s", c.lo, c.hi, s, c.want)
		}
	}
}

func TestDistinctTicks(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		want   string
	}{{5.2795, 5.2925, "5.280 5.284 5.288 5.292"}, {10, 26, "10 15 20 25"}, {67.3, 67.5, "67.3 67.4 67.5"},
		// Ticks at halves: zero decimals would print the tick at 0.5 as "0" (the bug of a run's loss plot).
		{0.4, 1.1, "0.5 1.0"}} {
		var got []string
		for _, tk := range distinctTicks(c.lo, c.hi) {
			if tk.Label != "" {
				got = append(got, tk.Label)
			}
		}
		if s := strings.Join(got, " "); s != c.want {
			t.Errorf("ticks(%g, %g) = %s, want %s", c.lo, c.hi, s, c.want)
		}
	}
}
