package metrics

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestPlanKMeans(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		n, d, k, restarts    int
		wantRestarts, wantIt int
	}{
		{"CUB-100 eval half, trained", 2953, 512, 50, 0, 10, 300},
		{"CUB-100 eval half, raw features", 2953, 1280, 50, 0, 10, 300},
		{"CUB-200 test half, raw features", 5924, 1280, 100, 0, 10, 300},
		{"Cars196 test half, raw features", 8131, 1280, 98, 0, 10, 300},
		{"2.56e9", 10000, 512, 500, 0, 7, 300}, // 2e10/2.56e9 = 7.8
		{"bench-memory 20k", 20000, 512, 200, 0, 9, 300},
		{"1e10", 20000, 512, 1000, 0, 1, 125}, // 1.28e12/1.024e10 = 125
		{"bench-memory 100k", 100000, 512, 1000, 0, 1, 25},
		{"requested restarts kept", 100000, 512, 1000, 10, 10, 25},
		{"Stanford Online Products test half", 60502, 512, 11316, 0, 1, 25},
		{"tiny", 2, 1, 1, 0, 10, 300},
	} {
		p := PlanKMeans(tc.n, tc.d, tc.k, tc.restarts)
		if p.Clusters != tc.k || p.Restarts != tc.wantRestarts || p.MaxIter != tc.wantIt || p.Tol != kmeansTol {
			t.Errorf("%s: PlanKMeans(%d, %d, %d, %d) = %+v, want %d clusters, %d restarts, %d iterations, tol %g",
				tc.name, tc.n, tc.d, tc.k, tc.restarts, p, tc.k, tc.wantRestarts, tc.wantIt, kmeansTol)
		}
		if tc.name == "bench-memory 100k" && !strings.HasPrefix(p.Reason, "1 restart instead of 10") {
			t.Errorf("%s: reason %q", tc.name, p.Reason)
		}
		if (tc.wantIt < kmeansMaxIter) != strings.Contains(p.Reason, "instead of 300") {
			t.Errorf("%s: reason %q does not say whether the cap was lowered", tc.name, p.Reason)
		}
	}
}

// TestKMeansPlanKeepsCUBSize: at CUB size (3000 x 512, 50 classes: the plan is sklearn's 10
// restarts and 300 iterations) the default evaluation gives bit for bit the NMI and AMI of the
// code before the plan existed (commit 6473c83, same data and seed), and no restart hits the cap.
// The restarts take 7 to 18 iterations; a cap of 9 changes the first NMI (checked).
func TestKMeansPlanKeepsCUBSize(t *testing.T) {
	const n, d, k = 3000, 512, 50
	for _, tc := range []struct {
		noise    float64
		nmi, ami float64
	}{
		{3, 0.99468071495391597, 0.99395878272409954},
		{6, 0.15946164720268521, 0.045201555323244651},
	} {
		xf, labels := clustered(rand.New(rand.NewPCG(5, 6)), n, d, k, tc.noise)
		x := make([]float32, len(xf))
		for i, v := range xf {
			x[i] = float32(v)
		}
		var km *KMeansReport
		r, err := Evaluate(x, n, d, labels, Options{Seed: 1, Workers: 2, KMeansDone: func(rep KMeansReport) { km = &rep }})
		if err != nil {
			t.Fatal(err)
		}
		if r.NMI != tc.nmi || r.AMI != tc.ami {
			t.Errorf("noise %g: NMI %.17g AMI %.17g, want %.17g %.17g", tc.noise, r.NMI, r.AMI, tc.nmi, tc.ami)
		}
		if km == nil {
			t.Fatal("KMeansDone not called")
		}
		if km.Restarts != 10 || km.MaxIter != 300 || len(km.Iterations) != 10 || km.Capped != 0 || slices.Max(km.Iterations) >= 300 {
			t.Errorf("noise %g: k-means report %+v, want 10 restarts under the cap of 300", tc.noise, km.KMeansPlan)
		}
		t.Logf("noise %g: iterations %v", tc.noise, km.Iterations)
	}
}

// TestKMeansCap: a cap below what the data needs stops every restart there and says so; the
// same restarts without the cap converge, to a lower inertia.
func TestKMeansCap(t *testing.T) {
	const n, d, k = 600, 16, 12
	rng := rand.New(rand.NewPCG(7, 8))
	x := make([]float64, n*d)
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	sq := normalizeRows(x, n, d)
	sc := newScreen(x, sq, d)
	free := kmeans(x, sq, sc.x32, n, d, KMeansPlan{Clusters: k, Restarts: 3, MaxIter: 300, Tol: kmeansTol}, 1, 64, 2, nil)
	if free.Capped != 0 || slices.Min(free.Iterations) < 4 {
		t.Fatalf("uncapped run: iterations %v, %d capped; want convergence after at least 4", free.Iterations, free.Capped)
	}
	capped := kmeans(x, sq, sc.x32, n, d, KMeansPlan{Clusters: k, Restarts: 3, MaxIter: 2, Tol: kmeansTol}, 1, 64, 2, nil)
	if capped.Capped != 3 || !slices.Equal(capped.Iterations, []int{2, 2, 2}) {
		t.Errorf("cap 2: iterations %v, %d capped; want [2 2 2], 3", capped.Iterations, capped.Capped)
	}
	if !(capped.Inertia > free.Inertia) {
		t.Errorf("capped inertia %v not above the converged %v", capped.Inertia, free.Inertia)
	}
	again := kmeans(x, sq, sc.x32, n, d, KMeansPlan{Clusters: k, Restarts: 3, MaxIter: 2, Tol: kmeansTol}, 1, 64, 1, nil)
	if !slices.Equal(again.assign, capped.assign) || again.Inertia != capped.Inertia {
		t.Error("a capped k-means differs with the number of workers")
	}
	var calls int
	if _, err := Evaluate(make([]float32, 4*2), 4, 2, []int{0, 0, 1, 1}, Options{SkipClustering: true, KMeansDone: func(KMeansReport) { calls++ }}); err != nil || calls != 0 {
		t.Errorf("SkipClustering: err %v, KMeansDone called %d times; want nil, 0", err, calls)
	}
}
