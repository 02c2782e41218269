package metrics

import "sync"

// Stage names a phase of Evaluate or Neighbors reported to Options.Progress.
type Stage string

const (
	// StageNeighbors is the exact nearest-neighbour search; its units are query rows (total n).
	StageNeighbors Stage = "neighbors"
	// StageKMeans is the clustering for NMI and AMI; its units are k-means restarts.
	StageKMeans Stage = "kmeans"
)

// reporter passes the progress of one stage to Options.Progress, one call at a time.
type reporter struct {
	mu          sync.Mutex
	f           func(stage Stage, done, total int)
	stage       Stage
	done, total int
}

// startStage reports that stage (total units) starts; nil when f is nil.
func startStage(f func(Stage, int, int), stage Stage, total int) *reporter {
	if f == nil {
		return nil
	}
	f(stage, 0, total)
	return &reporter{f: f, stage: stage, total: total}
}

// add reports n more units done. A nil reporter does nothing.
func (r *reporter) add(n int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done += n
	r.f(r.stage, r.done, r.total)
}
