package report

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	_ "image/png" // decode PNG examples
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	xdraw "golang.org/x/image/draw"

	"github.com/grouploss/pipeline/pipeline/metrics"
)

const (
	numQueries   = 8
	numNeighbors = 5
	thumbSize    = 128 // px, the longer side of a thumbnail
	thumbQuality = 80  // JPEG quality of the re-encoded thumbnails
)

// grid picks the queries, finds their neighbours and encodes the thumbnails. note says what could
// not be shown.
func grid(ex Examples) ([]query, string, error) {
	n := len(ex.Paths)
	if n == 0 {
		return nil, "No evaluated images to show.", nil
	}
	if len(ex.Labels) != n {
		return nil, "", fmt.Errorf("report: %d example labels for %d images", len(ex.Labels), n)
	}
	if n < 2 {
		return nil, "Too few evaluated images for retrieval examples.", nil
	}
	nb, k, err := neighbors(ex, n)
	if err != nil {
		return nil, "", err
	}
	if nb == nil {
		return nil, "No embeddings or neighbour lists were given: no retrieval examples.", nil
	}
	show := min(k, numNeighbors)

	th := thumbnailer{cache: map[string]thumb{}}
	var qs []query
	for _, q := range pickQueries(ex.Labels) {
		qv := query{Query: th.thumb(ex, q, "query", 0), K: show}
		for r := range show {
			j := nb[q*k+r]
			if j < 0 || j >= n {
				return nil, "", fmt.Errorf("report: neighbour %d of item %d is %d, outside [0, %d)", r, q, j, n)
			}
			cls := "miss"
			if ex.Labels[j] == ex.Labels[q] {
				cls = "hit"
				qv.Hits++
			}
			qv.Neighbors = append(qv.Neighbors, th.thumb(ex, j, cls, r+1))
		}
		qs = append(qs, qv)
	}
	note := ""
	if th.failed > 0 {
		note = fmt.Sprintf("%d image(s) could not be read (grey placeholders), first: %s.", th.failed, th.firstErr)
	}
	return qs, note, nil
}

// neighbors returns the n×k neighbour lists: the given ones, or computed from the embeddings.
func neighbors(ex Examples, n int) ([]int, int, error) {
	if ex.Neighbors != nil {
		if ex.K < 1 || len(ex.Neighbors) != n*ex.K {
			return nil, 0, fmt.Errorf("report: %d neighbour entries for %d images and K = %d", len(ex.Neighbors), n, ex.K)
		}
		return ex.Neighbors, ex.K, nil
	}
	if ex.Emb == nil {
		return nil, 0, nil
	}
	if ex.Dim < 1 || len(ex.Emb) != n*ex.Dim {
		return nil, 0, fmt.Errorf("report: %d embedding values for %d images of dimension %d", len(ex.Emb), n, ex.Dim)
	}
	k := min(numNeighbors, n-1)
	nb, err := metrics.Neighbors(ex.Emb, n, ex.Dim, k, metrics.Options{Workers: 1})
	if err != nil {
		return nil, 0, fmt.Errorf("report: retrieval examples: %w", err)
	}
	return nb, k, nil
}

// pickQueries chooses up to numQueries distinct items deterministically: classes evenly spaced
// over the sorted class ids, the middle item (in item order) of each; with fewer classes than
// queries, classes repeat with the items after their middle one, and an exhausted class passes
// its turn to the next class.
func pickQueries(labels []int) []int {
	members := map[int][]int{}
	for i, l := range labels {
		members[l] = append(members[l], i)
	}
	classes := make([]int, 0, len(members))
	for l := range members {
		classes = append(classes, l)
	}
	slices.Sort(classes)
	q := min(numQueries, len(labels))
	var out []int
	taken := map[int]int{} // items taken per class
	for i := range q {
		base := i * len(classes) / q
		for off := range classes {
			c := classes[(base+off)%len(classes)]
			m := members[c]
			if taken[c] < len(m) {
				out = append(out, m[(len(m)/2+taken[c])%len(m)])
				taken[c]++
				break
			}
		}
	}
	return out
}

type thumbnailer struct {
	cache    map[string]thumb // by path: the encoded image only
	failed   int
	firstErr string
}

// thumb returns item i's thumbnail with its caption, border class and rank.
func (t *thumbnailer) thumb(ex Examples, i int, class string, rank int) thumb {
	path := ex.Paths[i]
	name := className(ex, i)
	v, ok := t.cache[path]
	if !ok {
		b, err := encodeThumb(path)
		if err != nil {
			t.failed++
			if t.firstErr == "" {
				t.firstErr = err.Error()
			}
			b = placeholder()
		}
		v = thumb{Src: srcAttr("image/jpeg", b)}
		t.cache[path] = v
	}
	v.Caption = name
	v.Title = name + " — " + filepath.Base(path)
	v.Class, v.Rank = class, rank
	return v
}

// className is the display name of item i's class: underscores as spaces.
func className(ex Examples, i int) string {
	l := ex.Labels[i]
	if l >= 0 && l < len(ex.Classes) && ex.Classes[l] != "" {
		return strings.ReplaceAll(ex.Classes[l], "_", " ")
	}
	return strconv.Itoa(l)
}

// encodeThumb decodes a JPEG or PNG, scales it to fit thumbSize×thumbSize and re-encodes it as JPEG.
func encodeThumb(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	src, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	b := src.Bounds()
	if b.Dx() < 1 || b.Dy() < 1 {
		return nil, fmt.Errorf("%s: empty image", path)
	}
	w, h := thumbSize, thumbSize
	if b.Dx() > b.Dy() {
		h = max(1, b.Dy()*thumbSize/b.Dx())
	} else {
		w = max(1, b.Dx()*thumbSize/b.Dy())
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	// White under transparent pixels (JPEG has no alpha).
	xdraw.Draw(dst, dst.Bounds(), image.NewUniform(color.White), image.Point{}, xdraw.Src)
	xdraw.CatmullRom.Scale(dst, dst.Bounds(), src, b, xdraw.Over, nil)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: thumbQuality}); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return buf.Bytes(), nil
}

// placeholder is a grey square for an image that cannot be read.
func placeholder() []byte {
	img := image.NewGray(image.Rect(0, 0, thumbSize, thumbSize))
	for i := range img.Pix {
		img.Pix[i] = 0xc8
	}
	var buf bytes.Buffer
	jpeg.Encode(&buf, img, &jpeg.Options{Quality: thumbQuality}) // cannot fail on an in-memory image
	return buf.Bytes()
}
