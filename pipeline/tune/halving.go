package tune

import "sort"

// Halving is asynchronous successive halving (ASHA, Li et al. 2020) run one trial after the
// other: the rungs are the epochs MinEpochs·Eta^k; a trial reaching a rung goes on only if its
// score there is among the best 1/Eta of the scores recorded at that rung by all trials so far
// (itself included). A trial's score at a rung is its best validation score up to that epoch
// (RungScore), as model selection keeps the best epoch. Until Eta trials
// have reached a rung, it stops none (with fewer there is no top 1/Eta to be out of).
// Eta < 2 disables it.
type Halving struct {
	Eta       int `json:"eta"`
	MinEpochs int `json:"min_epochs"`
}

// Enabled says whether h stops trials.
func (h Halving) Enabled() bool { return h.Eta >= 2 && h.MinEpochs >= 1 }

// IsRung says whether epoch is a rung.
func (h Halving) IsRung(epoch int) bool {
	if !h.Enabled() {
		return false
	}
	for r := h.MinEpochs; r <= epoch; r *= h.Eta {
		if r == epoch {
			return true
		}
	}
	return false
}

// Promote says whether a trial scoring score at a rung goes on, others being the scores of the
// earlier trials that reached that rung.
func (h Halving) Promote(others []float64, score float64) bool {
	k := len(others) + 1
	if !h.Enabled() || k < h.Eta {
		return true
	}
	all := append(append([]float64(nil), others...), score)
	sort.Sort(sort.Reverse(sort.Float64Slice(all)))
	return score >= all[k/h.Eta-1]
}

// RungScore is the best of scores[1..epoch] (scores[e] is the validation score after epoch e):
// what the trial's training reached by then. Epoch 0 (before training) is left out: in most
// spaces every trial starts from the same initialization, and a trial whose training only lowers
// the score would otherwise tie with the best of them. It is false when the scores do not reach
// epoch (or epoch is 0).
func RungScore(scores []float64, epoch int) (float64, bool) {
	if epoch < 1 || epoch >= len(scores) {
		return 0, false
	}
	best := scores[1]
	for _, s := range scores[2 : epoch+1] {
		best = max(best, s)
	}
	return best, true
}
