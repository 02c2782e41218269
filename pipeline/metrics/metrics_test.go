package metrics

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/internal/testenv"
)

// sharedDir locates the read-only shared data: $PIPELINE_SHARED_DIR, else ../shared next to the
// repository root (found by walking up to go.mod). It skips the test when absent.
func sharedDir(t testing.TB) string { return testenv.SharedDir(t) }

type goldenCase struct {
	Embeddings        [][]float64 `json:"embeddings"`
	Labels            []int       `json:"labels"`
	ClusterAssignment []int       `json:"cluster_assignment"`
	Expected          struct {
		RecallAt1  float64 `json:"recall_at_1"`
		RecallAt2  float64 `json:"recall_at_2"`
		RecallAt4  float64 `json:"recall_at_4"`
		RecallAt8  float64 `json:"recall_at_8"`
		RPrecision float64 `json:"r_precision"`
		MAPAtR     float64 `json:"map_at_r"`
		NMI        float64 `json:"nmi_of_cluster_assignment"`
		AMI        float64 `json:"ami_of_cluster_assignment"`
	} `json:"expected"`
}

// TestGolden checks every retrieval metric and NMI/AMI of the given cluster assignment against
// the reference values of make_golden.py (numpy argsort / sklearn), to 1e-9 absolute.
func TestGolden(t *testing.T) {
	const tol = 1e-9
	raw, err := os.ReadFile(filepath.Join(sharedDir(t), "reference", "metrics_golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []goldenCase `json:"cases"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Cases) != 3 {
		t.Fatalf("want 3 golden cases, got %d", len(doc.Cases))
	}
	maxDev := 0.0
	defer func() { t.Logf("max |got-want| over all golden values: %.3g", maxDev) }()
	for ci, c := range doc.Cases {
		n, d := len(c.Embeddings), len(c.Embeddings[0])
		x := make([]float64, 0, n*d)
		for _, row := range c.Embeddings {
			x = append(x, row...)
		}
		for _, block := range []int{0, 7} {
			got, err := Evaluate64(x, n, d, c.Labels, Options{BlockSize: block, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			e := c.Expected
			for _, m := range []struct {
				name      string
				got, want float64
			}{
				{"recall_at_1", got.RecallAt1, e.RecallAt1},
				{"recall_at_2", got.RecallAt2, e.RecallAt2},
				{"recall_at_4", got.RecallAt4, e.RecallAt4},
				{"recall_at_8", got.RecallAt8, e.RecallAt8},
				{"r_precision", got.RPrecision, e.RPrecision},
				{"map_at_r", got.MAPAtR, e.MAPAtR},
			} {
				maxDev = max(maxDev, math.Abs(m.got-m.want))
				if math.Abs(m.got-m.want) > tol {
					t.Errorf("case %d (n=%d d=%d) block %d: %s = %.17g, want %.17g", ci, n, d, block, m.name, m.got, m.want)
				}
			}
			if got.NMI <= 0 || got.NMI > 1 || math.IsNaN(got.AMI) {
				t.Errorf("case %d: k-means NMI %v AMI %v out of range", ci, got.NMI, got.AMI)
			}
		}
		maxDev = max(maxDev, math.Abs(NMI(c.Labels, c.ClusterAssignment)-c.Expected.NMI),
			math.Abs(AMI(c.Labels, c.ClusterAssignment)-c.Expected.AMI))
		if v := NMI(c.Labels, c.ClusterAssignment); math.Abs(v-c.Expected.NMI) > tol {
			t.Errorf("case %d: NMI = %.17g, want %.17g", ci, v, c.Expected.NMI)
		}
		if v := AMI(c.Labels, c.ClusterAssignment); math.Abs(v-c.Expected.AMI) > tol {
			t.Errorf("case %d: AMI = %.17g, want %.17g", ci, v, c.Expected.AMI)
		}
		// Symmetry of both scores (sklearn's are symmetric).
		if a, b := NMI(c.ClusterAssignment, c.Labels), NMI(c.Labels, c.ClusterAssignment); math.Abs(a-b) > 1e-12 {
			t.Errorf("case %d: NMI not symmetric: %v vs %v", ci, a, b)
		}
		if a, b := AMI(c.ClusterAssignment, c.Labels), AMI(c.Labels, c.ClusterAssignment); math.Abs(a-b) > 1e-12 {
			t.Errorf("case %d: AMI not symmetric: %v vs %v", ci, a, b)
		}
	}
}

// bruteForce is a direct transcription of make_golden.py's metrics: full distance matrix from
// differences of normalized rows, stable argsort. Zero rows stay zero, lone queries are excluded
// from R-precision and MAP@R (the package's documented conventions).
func bruteForce(x []float64, n, d int, labels []int) (Result, [][]int) {
	e := slices.Clone(x)
	for i := range n {
		row := e[i*d : (i+1)*d]
		s := 0.0
		for _, v := range row {
			s += v * v
		}
		if s > 0 {
			for j := range row {
				row[j] /= math.Sqrt(s)
			}
		}
	}
	var r Result
	orders := make([][]int, n)
	nonLone := 0
	for i := range n {
		dist := make([]float64, n)
		order := make([]int, 0, n-1)
		zero := !slices.ContainsFunc(e[i*d:(i+1)*d], func(v float64) bool { return v != 0 })
		for j := range n {
			for k := range d {
				t := e[i*d+k] - e[j*d+k]
				dist[j] += t * t
			}
			if zero && dist[j] > 0 {
				dist[j] = 1 // documented: zero query rows see all nonzero rows at exactly 1
			}
			if j != i {
				order = append(order, j)
			}
		}
		sort.SliceStable(order, func(a, b int) bool { return dist[order[a]] < dist[order[b]] })
		orders[i] = order
		for t, k := range []int{1, 2, 4, 8} {
			for _, j := range order[:min(k, n-1)] {
				if labels[j] == labels[i] {
					*[]*float64{&r.RecallAt1, &r.RecallAt2, &r.RecallAt4, &r.RecallAt8}[t] += 1
					break
				}
			}
		}
		R := -1
		for j := range n {
			if labels[j] == labels[i] {
				R++
			}
		}
		if R == 0 {
			continue
		}
		nonLone++
		hits, ap := 0, 0.0
		for rank, j := range order[:R] {
			if labels[j] == labels[i] {
				hits++
				ap += float64(hits) / float64(rank+1)
			}
		}
		r.RPrecision += float64(hits) / float64(R)
		r.MAPAtR += ap / float64(R)
	}
	r.RecallAt1 /= float64(n)
	r.RecallAt2 /= float64(n)
	r.RecallAt4 /= float64(n)
	r.RecallAt8 /= float64(n)
	if nonLone > 0 {
		r.RPrecision /= float64(nonLone)
		r.MAPAtR /= float64(nonLone)
	}
	return r, orders
}

// clustered returns n rows of ncls Gaussian classes (centre spread 1, noise `noise`), labels
// i % ncls.
func clustered(rng *rand.Rand, n, d, ncls int, noise float64) ([]float64, []int) {
	centers := make([]float64, ncls*d)
	for i := range centers {
		centers[i] = rng.NormFloat64()
	}
	x := make([]float64, n*d)
	labels := make([]int, n)
	for i := range n {
		labels[i] = i % ncls
		for j := range d {
			x[i*d+j] = centers[labels[i]*d+j] + noise*rng.NormFloat64()
		}
	}
	return x, labels
}

func retrievalOnly(r Result) Result { r.NMI, r.AMI = 0, 0; return r }

// TestAgainstBruteForce compares Evaluate64 and Neighbors with the O(n²) transcription on data
// with exact duplicate rows (ties), zero rows and lone labels, for several block sizes and worker
// counts, on both gemm paths (n <= 192 and n > 192).
func TestAgainstBruteForce(t *testing.T) {
	const tol = 1e-12
	for _, n := range []int{40, 150, 257} {
		rng := rand.New(rand.NewPCG(uint64(n), 3))
		d := 16
		x, labels := clustered(rng, n, d, 9, 1.5)
		copy(x[5*d:6*d], x[3*d:4*d])   // duplicate rows: exact ties
		copy(x[20*d:21*d], x[3*d:4*d]) //
		clear(x[7*d : 8*d])            // zero rows
		clear(x[11*d : 12*d])          //
		labels[13] = 1000              // lone label
		labels[n-1] = -5               // lone label
		want, _ := bruteForce(x, n, d, labels)
		for _, o := range []Options{{}, {BlockSize: 1}, {BlockSize: 7, Workers: 3}, {BlockSize: 4096, Workers: 2}} {
			o.SkipClustering = true
			got, err := Evaluate64(x, n, d, labels, o)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range [][2]float64{{got.RecallAt1, want.RecallAt1}, {got.RecallAt2, want.RecallAt2},
				{got.RecallAt4, want.RecallAt4}, {got.RecallAt8, want.RecallAt8},
				{got.RPrecision, want.RPrecision}, {got.MAPAtR, want.MAPAtR}} {
				if math.Abs(m[0]-m[1]) > tol {
					t.Errorf("n=%d %+v: got %+v, want %+v", n, o, got, want)
					break
				}
			}
			x32 := make([]float32, len(x))
			for i, v := range x {
				x32[i] = float32(v)
			}
			x64 := make([]float64, len(x))
			for i, v := range x32 {
				x64[i] = float64(v)
			}
			_, orders32 := bruteForce(x64, n, d, labels)
			const k = 10
			nb, err := Neighbors(x32, n, d, k, o)
			if err != nil {
				t.Fatal(err)
			}
			mismatch := 0
			for i := range n {
				if !slices.Equal(nb[i*k:(i+1)*k], orders32[i][:k]) {
					mismatch++
				}
			}
			if mismatch > 0 {
				t.Errorf("n=%d %+v: Neighbors differ from brute force for %d rows", n, o, mismatch)
			}
		}
	}
}

// TestBlockAndWorkerIndependence: results (including the k-means NMI/AMI) are bit-identical for
// block sizes 7 and 4096 and 1 or 3 workers, and float32 input equals its float64 widening.
func TestBlockAndWorkerIndependence(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	n, d := 600, 24
	x, labels := clustered(rng, n, d, 12, 1.2)
	ref, err := Evaluate64(x, n, d, labels, Options{BlockSize: 4096, Seed: 5, KMeansRestarts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if ref.RecallAt1 == 0 || ref.NMI == 0 {
		t.Fatalf("degenerate reference %+v", ref)
	}
	for _, o := range []Options{{BlockSize: 7}, {BlockSize: 7, Workers: 3}, {BlockSize: 4096, Workers: 3}} {
		o.Seed, o.KMeansRestarts = 5, 3
		got, err := Evaluate64(x, n, d, labels, o)
		if err != nil {
			t.Fatal(err)
		}
		if got != ref {
			t.Errorf("%+v: %+v != block 4096 %+v", o, got, ref)
		}
	}
	x32 := make([]float32, len(x))
	x64 := make([]float64, len(x))
	for i, v := range x {
		x32[i] = float32(v)
		x64[i] = float64(x32[i])
	}
	a, err := Evaluate(x32, n, d, labels, Options{BlockSize: 33, Seed: 5, KMeansRestarts: 3})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Evaluate64(x64, n, d, labels, Options{BlockSize: 33, Seed: 5, KMeansRestarts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("Evaluate(float32) %+v != Evaluate64(widened) %+v", a, b)
	}
}

// TestKMeansBlobs: well separated blobs are recovered exactly (NMI = AMI = 1) and the result is
// deterministic for a seed.
func TestKMeansBlobs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n, d, k = 400, 8, 7
	xf, labels := clustered(rng, n, d, k, 0.02)
	for i := range xf {
		xf[i] *= 10
	}
	x := make([]float32, len(xf))
	for i, v := range xf {
		x[i] = float32(v)
	}
	a1, in1 := KMeans(x, n, d, k, 10, 42)
	a2, in2 := KMeans(x, n, d, k, 10, 42)
	if !slices.Equal(a1, a2) || in1 != in2 {
		t.Fatal("KMeans is not deterministic for a fixed seed")
	}
	if v := NMI(labels, a1); v != 1 {
		t.Errorf("NMI of blob clustering = %v, want 1", v)
	}
	if v := AMI(labels, a1); math.Abs(v-1) > 1e-12 {
		t.Errorf("AMI of blob clustering = %v, want 1", v)
	}
	// Inertia is the sum of squared distances to the cluster means.
	var inertia float64
	for c := range k {
		mean := make([]float64, d)
		cnt := 0
		for i := range n {
			if a1[i] == c {
				cnt++
				for j := range d {
					mean[j] += float64(x[i*d+j])
				}
			}
		}
		for i := range n {
			if a1[i] == c {
				for j := range d {
					v := float64(x[i*d+j]) - mean[j]/float64(cnt)
					inertia += v * v
				}
			}
		}
	}
	if math.Abs(inertia-in1) > 1e-9*max(1, inertia) {
		t.Errorf("inertia = %v, recomputed %v", in1, inertia)
	}
	res, err := Evaluate(x, n, d, labels, Options{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.NMI != 1 || res.RecallAt1 != 1 || res.MAPAtR != 1 || res.RPrecision != 1 {
		t.Errorf("Evaluate on blobs = %+v, want all 1", res)
	}
}

// TestMutualInfoEdgeCases pins sklearn's documented edge-case values.
func TestMutualInfoEdgeCases(t *testing.T) {
	for _, c := range []struct {
		name     string
		a, b     []int
		nmi, ami float64
	}{
		{"both single class", []int{3, 3, 3}, []int{0, 0, 0}, 1, 1},
		{"both empty", nil, nil, 1, 1},
		{"labels single class", []int{1, 1, 1, 1}, []int{0, 1, 2, 3}, 0, 0},
		{"clusters single class", []int{0, 0, 1, 1}, []int{5, 5, 5, 5}, 0, 0},
		{"permuted identical", []int{0, 0, 1, 1, 2}, []int{7, 7, -1, -1, 4}, 1, 1},
		{"fully split", []int{0, 0, 0, 0}, []int{0, 1, 2, 3}, 0, 0},
		{"independent", []int{0, 0, 1, 1}, []int{0, 1, 0, 1}, 0, -0.5},
	} {
		if v := NMI(c.a, c.b); math.Abs(v-c.nmi) > 1e-12 {
			t.Errorf("%s: NMI = %v, want %v", c.name, v, c.nmi)
		}
		if v := AMI(c.a, c.b); math.Abs(v-c.ami) > 1e-12 {
			t.Errorf("%s: AMI = %v, want %v", c.name, v, c.ami)
		}
	}
}

func TestErrors(t *testing.T) {
	good := []float32{1, 0, 0, 1, 1, 1}
	for _, c := range []struct {
		name   string
		emb    []float32
		n, d   int
		labels []int
		opts   Options
		want   string
	}{
		{"one row", good[:2], 1, 2, []int{0}, Options{}, "at least 2 rows"},
		{"shape", good, 3, 3, []int{0, 0, 1}, Options{}, "n*d"},
		{"labels", good, 3, 2, []int{0, 0}, Options{}, "labels"},
		{"nan", []float32{1, 0, float32(math.NaN()), 1, 1, 1}, 3, 2, []int{0, 0, 1}, Options{}, "row 1 column 0"},
		{"negative block", good, 3, 2, []int{0, 0, 1}, Options{BlockSize: -1}, ">= 0"},
	} {
		_, err := Evaluate(c.emb, c.n, c.d, c.labels, c.opts)
		if err == nil || !strings.HasPrefix(err.Error(), "metrics: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	if _, err := Neighbors(good, 3, 2, 3, Options{}); err == nil {
		t.Error("Neighbors with k = n accepted")
	}
}

// TestMemoryBounded runs the retrieval metrics on n = 20000, d = 128 with 64-row blocks and
// checks that the total allocation stays far below one n×n float32 matrix (1.6 GB).
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("n = 20000 exact kNN takes ~10 s; skipped with -short")
	}
	const n, d, limit = 20000, 128, 200 << 20
	rng := rand.New(rand.NewPCG(9, 9))
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	labels := make([]int, n)
	for i := range labels {
		labels[i] = i % 500
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := Evaluate(x, n, d, labels, Options{BlockSize: 64, SkipClustering: true})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("n=%d d=%d: total allocated %.1f MB, recall@1 %.4f", n, d, float64(alloc)/(1<<20), res.RecallAt1)
	if alloc > limit {
		t.Errorf("allocated %d bytes, want < %d", alloc, limit)
	}
	// Random labels on random data: recall@1 is about chance (1/500 per neighbour).
	if res.RecallAt1 > 0.02 {
		t.Errorf("recall@1 = %v on random data, want about 0.002", res.RecallAt1)
	}
}

// BenchmarkEvaluate: n = 3000, d = 512 (the CUB-100 test split: 50 classes), default options.
func BenchmarkEvaluate(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n, d = 3000, 512
	xf, labels := clustered(rng, n, d, 50, 1.5)
	x := make([]float32, len(xf))
	for i, v := range xf {
		x[i] = float32(v)
	}
	for _, bc := range []struct {
		name string
		opts Options
	}{{"retrieval", Options{SkipClustering: true}}, {"full", Options{}}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Evaluate(x, n, d, labels, bc.opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestNearTiesDecidedInFloat64: rows (1, t·2^-20, 0, ...) are identical in the float32 product
// (their normalized first coordinates and dot products with (1, 0, ...) all round to 1), but their
// float64 distances to (1, 0, ...) grow with t. Row j has t = m-j, so the exact order is the
// highest index first: the opposite of what ties broken by the lower index would give, had the
// float32 product decided.
func TestNearTiesDecidedInFloat64(t *testing.T) {
	const m, d, k = 40, 8, 12
	n := m + 1
	x := make([]float32, n*d)
	for j := range m {
		x[j*d] = 1
		x[j*d+1] = float32(math.Ldexp(float64(m-j), -20))
	}
	x[m*d] = 1 // the query: row m
	nb, err := Neighbors(x, n, d, k, Options{BlockSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	x64 := make([]float64, len(x))
	for i, v := range x {
		x64[i] = float64(v)
	}
	_, orders := bruteForce(x64, n, d, make([]int, n))
	for r := range k {
		if nb[m*k+r] != m-1-r || orders[m][r] != m-1-r {
			t.Fatalf("neighbours of the query: %v, brute force %v, want %d, %d, ...", nb[m*k:(m+1)*k], orders[m][:k], m-1, m-2)
		}
	}
	// The same rows as labels: only the exact order puts the query's class first.
	labels := make([]int, n)
	labels[m-1], labels[m] = 1, 1
	res, err := Evaluate(x, n, d, labels, Options{SkipClustering: true})
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := bruteForce(x64, n, d, labels); res.RecallAt1 != want.RecallAt1 || res.MAPAtR != want.MAPAtR {
		t.Errorf("Evaluate %+v, brute force %+v", res, want)
	}
}
