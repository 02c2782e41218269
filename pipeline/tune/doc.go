// Package tune implements the hyperparameter search of `pipeline tune`: a search space over
// config keys (space.go), quasi-random points in it (sample.go), successive halving of poor trials
// on their per-epoch validation scores (halving.go), the study that runs, records and resumes the
// trials (study.go) and its report (report.go). It knows nothing of training: an Objective trains
// one trial's configuration and reports its validation scores; the pipeline package provides it.
//
// The search space is a YAML mapping from dotted config keys to a distribution:
//
//	optimizer.args.lr: loguniform(1e-5, 1e-3)   # log-uniform between the bounds
//	loss.args.scaling: uniform(0.5, 2)          # uniform between the bounds
//	loss.args.anchors_per_class: int(1, 4)      # an integer in [1, 4], both included
//	loss.args.temperature: [8, 16, 24, 48]      # one of the listed values
//
// Points come from a scrambled Halton sequence (gonum's samplemv.Halton, Owen's randomization,
// seeded): its first n points cover the space more evenly than n random draws, and point i does
// not depend on how many are drawn, so a resumed study draws the same trials.
package tune
