package gallery

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/internal/f32le"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/npy"
)

// randomIndex returns an Index of n Gaussian rows of dimension d (normalized by New).
func randomIndex(t *testing.T, rng *rand.Rand, n, d int) *Index {
	t.Helper()
	emb := make([]float32, n*d)
	for i := range emb {
		emb[i] = float32(rng.NormFloat64())
	}
	paths := make([]string, n)
	labels := make([]string, n)
	for i := range paths {
		paths[i] = fmt.Sprintf("/data/cls%d/img \"%d\"\u00e9.jpg", i%4, i)
		labels[i] = fmt.Sprintf("class,%d", i%4)
	}
	x, err := New(emb, d, paths, labels, Model{Path: "/models/m.onnx", SHA256: strings.Repeat("ab", 32),
		Metadata: map[string]string{"preprocess.size": "224x224", "embedding_dim": fmt.Sprint(d)}})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestIndexRoundTrip: Write then Open gives back the same index bit for bit; the file
// has the documented layout and length; rewriting replaces it atomically (no temporary left).
func TestIndexRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dir := t.TempDir()
	for _, tc := range []struct{ n, d int }{{1, 1}, {3, 7}, {300, 64}, {70000, 5}} {
		x := randomIndex(t, rng, tc.n, tc.d)
		for i := range tc.n {
			var s float64
			for _, v := range x.Embeddings[i*tc.d : (i+1)*tc.d] {
				s += float64(v) * float64(v)
			}
			if math.Abs(s-1) > 1e-6 {
				t.Fatalf("New left row %d with squared norm %v", i, s)
			}
		}
		p := filepath.Join(dir, "g.idx")
		if err := Write(p, x); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		mlen := binary.LittleEndian.Uint64(raw[32:])
		if string(raw[:8]) != indexMagic || binary.LittleEndian.Uint32(raw[8:]) != 1 ||
			binary.LittleEndian.Uint64(raw[16:]) != uint64(tc.d) || binary.LittleEndian.Uint64(raw[24:]) != uint64(tc.n) ||
			uint64(len(raw)) != 64+4*uint64(tc.n*tc.d)+mlen+16 || string(raw[len(raw)-16:len(raw)-8]) != indexTrailerMagic {
			t.Fatalf("(%d,%d): layout: header % x, %d bytes", tc.n, tc.d, raw[:40], len(raw))
		}
		if math.Float32frombits(binary.LittleEndian.Uint32(raw[64+4*(tc.n*tc.d-1):])) != x.Embeddings[tc.n*tc.d-1] {
			t.Errorf("(%d,%d): last embedding value not at its offset", tc.n, tc.d)
		}
		got, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if got.Dim != x.Dim || !reflect.DeepEqual(got.Paths, x.Paths) || !reflect.DeepEqual(got.Labels, x.Labels) ||
			!reflect.DeepEqual(got.Model, x.Model) || len(got.Embeddings) != len(x.Embeddings) {
			t.Fatalf("(%d,%d): read back dim %d, %d paths, model %+v; want %d, %d, %+v", tc.n, tc.d, got.Dim, len(got.Paths), got.Model,
				x.Dim, len(x.Paths), x.Model)
		}
		for i := range x.Embeddings {
			if math.Float32bits(got.Embeddings[i]) != math.Float32bits(x.Embeddings[i]) {
				t.Fatalf("(%d,%d): value %d read back as %v, want %v", tc.n, tc.d, i, got.Embeddings[i], x.Embeddings[i])
			}
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("folder holds %d entries after rewrites, want only g.idx", len(ents))
	}
	// A failed write leaves the previous file as it was.
	p := filepath.Join(dir, "g.idx")
	before, _ := os.ReadFile(p)
	bad := &Index{Dim: 2, Embeddings: []float32{1, float32(math.NaN())}, Paths: []string{"a"}, Labels: []string{"x"}}
	if err := Write(p, bad); err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Errorf("Write with a NaN: %v, want an error naming NaN", err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Error("a failed Write changed the existing file")
	}
}

// TestOpenRejects: torn, corrupt, foreign and wrong-version files are *IndexError values
// naming the file and the problem.
func TestOpenRejects(t *testing.T) {
	dir := t.TempDir()
	x := randomIndex(t, rand.New(rand.NewPCG(3, 4)), 10, 3)
	good := filepath.Join(dir, "good.idx")
	if err := Write(good, x); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(good)
	embEnd := 64 + 4*30
	with := func(off int, b ...byte) []byte {
		c := slices.Clone(raw)
		copy(c[off:], b)
		return c
	}
	flip := func(off int) []byte { return with(off, raw[off]^0x10) }
	npyPath := filepath.Join(dir, "x.npy")
	if err := npy.Write(npyPath, []float32{1, 2}, 1, 2); err != nil {
		t.Fatal(err)
	}
	npyRaw, _ := os.ReadFile(npyPath)
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not a gallery index"},
		{"text", []byte("path,label\na.jpg,1\n"), "not a gallery index"},
		{"npy", npyRaw, "not a gallery index"},
		{"magic only", raw[:8], "truncated"},
		{"torn header", raw[:40], "truncated"},
		{"torn embeddings", raw[:embEnd-5], "truncated"},
		{"torn metadata", raw[:embEnd+20], "truncated"},
		{"no trailer", raw[:len(raw)-16], "truncated"},
		{"trailing bytes", append(slices.Clone(raw), 0), "trailing bytes"},
		{"version 2", with(8, 2), "format version 2, this build reads version 1"},
		{"flags", with(12, 1), "unknown flags"},
		{"dim 0", with(16, 0), "dimension 0"},
		{"huge count", with(24, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), "truncated"},
		{"embedding bit", flip(64 + 17), "checksum mismatch"},
		{"metadata bit", flip(embEnd + 3), "checksum mismatch"},
		{"checksum bit", flip(len(raw) - 7), "checksum mismatch"},
		{"trailer magic", flip(len(raw) - 16), "no trailer"},
	} {
		p := filepath.Join(dir, tc.name+".idx")
		if err := os.WriteFile(p, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(p)
		var ie *IndexError
		if err == nil || !errors.As(err, &ie) || ie.Path != p || !strings.Contains(err.Error(), tc.want) ||
			!strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v, want an *IndexError naming the file and %q", tc.name, err, tc.want)
		}
	}
	// Valid framing and checksum but inconsistent content: a NaN, too few labels.
	for _, tc := range []struct {
		name string
		edit func(x *Index)
		want string
	}{
		{"nan", func(x *Index) { x.Embeddings[4] = float32(math.Inf(1)) }, "row 1 "},
		{"labels", func(x *Index) { x.Labels = x.Labels[:9] }, "10 embeddings but 10 paths and 9 labels"},
	} {
		y := *x
		y.Embeddings, y.Labels = slices.Clone(x.Embeddings), slices.Clone(x.Labels)
		tc.edit(&y)
		p := filepath.Join(dir, tc.name+".idx")
		if err := writeUnchecked(p, &y); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(p); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming the file and %q", tc.name, err, tc.want)
		}
	}
	if _, err := Open(filepath.Join(dir, "missing.idx")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("directory: %v", err)
	}
}

// writeUnchecked writes x in the index format without Write's checks, by writing a valid
// index of the same size and patching it.
func writeUnchecked(path string, x *Index) error {
	ok := *x
	ok.Embeddings = make([]float32, len(x.Embeddings))
	ok.Labels = slices.Clone(ok.Paths)
	raw, err := func() ([]byte, error) {
		if err := Write(path, &ok); err != nil {
			return nil, err
		}
		return os.ReadFile(path)
	}()
	if err != nil {
		return err
	}
	meta := []byte(fmt.Sprintf(`{"paths":%s,"labels":%s,"model":{}}`, jsonStrings(x.Paths), jsonStrings(x.Labels)))
	var b bytes.Buffer
	b.Write(raw[:64])
	binary.LittleEndian.PutUint64(b.Bytes()[32:], uint64(len(meta)))
	f32le.Write(&b, x.Embeddings)
	b.Write(meta)
	sum := crc32c(b.Bytes())
	b.WriteString(indexTrailerMagic)
	binary.Write(&b, binary.LittleEndian, sum)
	binary.Write(&b, binary.LittleEndian, uint32(0))
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func jsonStrings(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return "[" + strings.Join(q, ",") + "]"
}

// bruteForce returns all gallery rows sorted by the distance cosineDistance computes in float64
// from exact (float64) dot products, ties by row.
func bruteForce(x *Index, q []float32) []Neighbor {
	d := x.Dim
	var qs float64
	for _, v := range q {
		qs += float64(v) * float64(v)
	}
	qinv := 0.0
	if qs > 0 {
		qinv = 1 / math.Sqrt(qs)
	}
	all := make([]Neighbor, x.Len())
	for i := range all {
		row := x.Embeddings[i*d : (i+1)*d]
		var dot, gs float64
		for j, v := range row {
			dot += float64(v) * float64(q[j])
			gs += float64(v) * float64(v)
		}
		ginv := 0.0
		if gs > 0 {
			ginv = 1 / math.Sqrt(gs)
		}
		all[i] = Neighbor{Row: i, Distance: min(max(1-dot*qinv*ginv, 0), 2)}
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].Distance < all[b].Distance })
	return all
}

// TestSearchExactIntegers: on small-integer data every dot product is exact in float32, so
// Search must return exactly the brute-force neighbours, distances and tie order (many ties:
// duplicate rows, a zero row, a zero query), whatever the block sizes, for k up to beyond N.
func TestSearchExactIntegers(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n, d, nq = 53, 6, 9
	emb := make([]float32, n*d)
	for i := range emb {
		emb[i] = float32(rng.IntN(5) - 2)
	}
	copy(emb[10*d:11*d], emb[3*d:4*d]) // duplicates: a tie broken by the lower row
	copy(emb[40*d:41*d], emb[3*d:4*d])
	clear(emb[20*d : 21*d]) // a zero row: distance 1 to everything
	paths := make([]string, n)
	for i := range paths {
		paths[i] = fmt.Sprint(i)
	}
	x := &Index{Dim: d, Embeddings: emb, Paths: paths, Labels: paths}
	q := make([]float32, nq*d)
	for i := range q {
		q[i] = float32(rng.IntN(7) - 3)
	}
	copy(q[2*d:3*d], emb[3*d:4*d])
	clear(q[5*d : 6*d])
	for i := range d {
		q[7*d+i] = float32(math.Ldexp(float64(emb[3*d+i]), 126)) // unscaled, its dot products overflow float32
	}
	for _, bs := range [][2]int{{0, 0}, {1, 1}, {3, 2}, {7, 5}, {n, nq}, {n + 10, 100}, {17, 4}} {
		x.blockRows, x.queryRows = bs[0], bs[1]
		for _, k := range []int{1, 4, n - 1, n, n + 7} {
			got, err := x.Search(q, nq, k)
			if err != nil {
				t.Fatal(err)
			}
			for qi := range nq {
				want := bruteForce(x, q[qi*d:(qi+1)*d])[:min(k, n)]
				if qi == 7 {
					want = bruteForce(x, emb[3*d:4*d])[:min(k, n)]
				}
				if !slices.Equal(got[qi], want) {
					t.Fatalf("blocks %v, k %d, query %d:\n got %v\nwant %v", bs, k, qi, got[qi], want)
				}
			}
		}
	}
	got, _ := x.Search(q, nq, 3)
	if got[2][0] != (Neighbor{3, 0}) || got[2][1] != (Neighbor{10, 0}) || got[2][2] != (Neighbor{40, 0}) {
		t.Errorf("query equal to rows 3, 10, 40: %v, want them at distance 0 in row order", got[2])
	}
	for r, nb := range got[5] {
		if nb != (Neighbor{r, 1}) {
			t.Errorf("zero query: neighbour %d = %v, want row %d at distance 1", r, nb, r)
		}
	}
}

// TestSearchGaussian: on Gaussian data (float32 rounding) every reported neighbour's true
// distance equals the reported one within 1e-6 and the k-th distances match brute force within
// 1e-6, for several block sizes.
func TestSearchGaussian(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const n, d, nq = 2000, 48, 23
	x := randomIndex(t, rng, n, d)
	q := make([]float32, nq*d)
	for i := range q {
		q[i] = float32(rng.NormFloat64() * 3)
	}
	for _, bs := range [][2]int{{0, 0}, {1, 1}, {64, 7}, {333, 23}, {1999, 2}} {
		x.blockRows, x.queryRows = bs[0], bs[1]
		const k = 10
		got, err := x.Search(q, nq, k)
		if err != nil {
			t.Fatal(err)
		}
		for qi := range nq {
			all := bruteForce(x, q[qi*d:(qi+1)*d])
			byRow := make([]float64, n)
			for _, nb := range all {
				byRow[nb.Row] = nb.Distance
			}
			seen := map[int]bool{}
			for r, nb := range got[qi] {
				if seen[nb.Row] || math.Abs(nb.Distance-byRow[nb.Row]) > 1e-6 || math.Abs(nb.Distance-all[r].Distance) > 1e-6 ||
					(r > 0 && nb.Distance < got[qi][r-1].Distance) {
					t.Fatalf("blocks %v, query %d, rank %d: %v (true distance %v), brute force %v", bs, qi, r, nb, byRow[nb.Row], all[r])
				}
				seen[nb.Row] = true
			}
		}
	}
}

func TestSearchErrors(t *testing.T) {
	x := randomIndex(t, rand.New(rand.NewPCG(9, 10)), 5, 4)
	for _, tc := range []struct {
		q     []float32
		nq, k int
		want  string
	}{
		{make([]float32, 4), 1, 0, "k = 0"},
		{make([]float32, 4), 1, -2, "k = -2"},
		{make([]float32, 6), 1, 3, "6 query values for 1 queries of dimension 4"},
		{[]float32{1, float32(math.NaN()), 0, 0}, 1, 3, "query 0 column 1 is NaN"},
	} {
		if _, err := x.Search(tc.q, tc.nq, tc.k); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Search(%v, %d, %d): %v, want %q", tc.q, tc.nq, tc.k, err, tc.want)
		}
	}
	if got, err := x.Search(nil, 0, 3); err != nil || len(got) != 0 {
		t.Errorf("no queries: %v, %v", got, err)
	}
	// A gallery row that was not normalized (norm 1e19) is refused, naming the lowest such row.
	big := &Index{Dim: 2, Embeddings: []float32{1, 0, 0, 1e19, 1e19, 0}, Paths: []string{"a", "b", "c"}, Labels: []string{"a", "b", "c"}}
	if _, err := big.Search([]float32{1, 0}, 1, 1); err == nil || !strings.Contains(err.Error(), "gallery row 1 has norm 1e+19") {
		t.Errorf("unnormalized gallery: %v", err)
	}
	for _, tc := range []struct {
		emb    []float32
		d      int
		paths  []string
		labels []string
		want   string
	}{
		{nil, 2, nil, nil, "no embeddings"},
		{[]float32{1, 2, 3}, 2, []string{"a"}, []string{"x"}, "3 embedding values, want 1 rows x 2"},
		{[]float32{1, 2}, 2, []string{"a"}, []string{"x", "y"}, "1 paths but 2 labels"},
		{[]float32{1, 2}, 0, []string{"a"}, []string{"x"}, "dimension 0"},
	} {
		if _, err := New(tc.emb, tc.d, tc.paths, tc.labels, Model{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%v, %d): %v, want %q", tc.emb, tc.d, err, tc.want)
		}
	}
}

// TestIdentifyModel: the model identity is the file's SHA-256, its absolute path and only its
// embedding metadata.
func TestIdentifyModel(t *testing.T) {
	m, err := onnxpb.Load(filepath.Join("..", "..", "backbone", "testdata", "tiny_cnn.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	onnxpb.SetMetadata(m, "preprocess.size", "6x6")
	onnxpb.SetMetadata(m, "embedding_dim", "3")
	onnxpb.SetMetadata(m, "tool_version", "test")
	p := filepath.Join(t.TempDir(), "m.onnx")
	if err := onnxpb.SaveAtomic(p, m); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p)
	sum := sha256.Sum256(raw)
	id, err := IdentifyModel(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Model{Path: p, SHA256: hex.EncodeToString(sum[:]), Metadata: map[string]string{"preprocess.size": "6x6", "embedding_dim": "3"}}
	if !reflect.DeepEqual(id, want) {
		t.Errorf("IdentifyModel = %+v, want %+v", id, want)
	}
	if _, err := IdentifyModel(filepath.Join(t.TempDir(), "none.onnx")); err == nil || !strings.Contains(err.Error(), "none.onnx") {
		t.Errorf("missing model: %v", err)
	}
}
