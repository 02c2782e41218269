package pipeline

import (
	"io"
	"strings"

	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/metrics"
)

// EvalProgress returns a metrics.Options.Progress that shows the evaluation named what (may be
// "") on w with data.Progress (count, rate and ETA redrawn on a terminal, a line per 10%
// elsewhere), one counted task per stage: "evaluate <what>: neighbours (queries)", then
// "evaluate <what>: k-means (restarts)". It is nil when w is nil or io.Discard.
func EvalProgress(w io.Writer, what string) func(metrics.Stage, int, int) {
	if w == nil || w == io.Discard {
		return nil
	}
	var p *data.Progress
	last := 0
	return func(stage metrics.Stage, done, total int) {
		if done == 0 { // a stage starts
			if p != nil {
				p.Done()
			}
			task := "neighbours (queries)"
			if stage == metrics.StageKMeans {
				task = "k-means (restarts)"
			}
			p, last = data.NewProgress(w, strings.TrimSpace("evaluate "+what)+": "+task, total), 0
			return
		}
		if p == nil {
			return
		}
		p.Add(done - last)
		last = done
		if done >= total {
			p.Done()
			p = nil
		}
	}
}
