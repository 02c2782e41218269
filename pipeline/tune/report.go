package tune

import (
	"fmt"
	"sort"
	"strings"
)

// Markdown is the study as a table, best score first: one row per trial with its status,
// validation score, epochs, seconds and parameter values.
func (st *Study) Markdown(sp *Space) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Tuning %s over %s\n\n", st.Config, st.Space)
	counts := map[string]int{}
	for _, t := range st.Trials {
		counts[t.Status]++
	}
	fmt.Fprintf(&b, "%d trials: %d completed, %d stopped by successive halving, %d non-finite, %d invalid, %d failed. ",
		len(st.Trials), counts[StatusOK], counts[StatusPruned], counts[StatusNaN], counts[StatusInvalid], counts[StatusFailed])
	fmt.Fprintf(&b, "Score: %s (validation classes only; the evaluation classes are not read).", st.Metric)
	if st.BaseTrial {
		b.WriteString(" Trial 1 is the base config itself, with only the space's single-valued keys set ((base): the base config's value).")
	}
	if st.Halving.Enabled() {
		fmt.Fprintf(&b, " Successive halving: eta %d, rungs at epochs %d, %d×%d, ...", st.Halving.Eta, st.Halving.MinEpochs, st.Halving.MinEpochs, st.Halving.Eta)
	}
	b.WriteString("\n\n")
	if st.Best >= 0 {
		fmt.Fprintf(&b, "Best: trial %d, score %.4f at epoch %d; its config is %s.\n\n", st.Trials[st.Best].Index+1, st.Trials[st.Best].Score, st.Trials[st.Best].BestEpoch, BestFile)
	}
	b.WriteString("| rank | trial | status | score | best epoch | epochs | seconds |")
	for _, p := range sp.Params {
		fmt.Fprintf(&b, " %s |", p.Key)
	}
	b.WriteString("\n|---:|---:|---|---:|---:|---:|---:|")
	b.WriteString(strings.Repeat("---|", len(sp.Params)))
	b.WriteString("\n")
	order := make([]int, len(st.Trials))
	for i := range order {
		order[i] = i
	}
	rank := func(t Trial) int { // completed first, then pruned, then the rest
		switch t.Status {
		case StatusOK:
			return 0
		case StatusPruned:
			return 1
		}
		return 2
	}
	sort.SliceStable(order, func(i, j int) bool {
		a, c := st.Trials[order[i]], st.Trials[order[j]]
		if rank(a) != rank(c) {
			return rank(a) < rank(c)
		}
		return a.Score > c.Score
	})
	for r, i := range order {
		t := st.Trials[i]
		score := fmt.Sprintf("%.4f", t.Score)
		if t.Status == StatusNaN || t.Status == StatusInvalid || t.Status == StatusFailed {
			score = "–"
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %s | %d | %d | %.0f |", r+1, t.Index+1, t.Status, score, t.BestEpoch, t.Epochs(), t.Seconds)
		for _, p := range sp.Params {
			if v, ok := t.Params[p.Key]; ok {
				fmt.Fprintf(&b, " %v |", v)
			} else {
				b.WriteString(" (base) |") // the base trial keeps the base config's value
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
