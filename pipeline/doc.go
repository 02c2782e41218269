// Package pipeline runs the Group Loss experiment end to end and is the tool's Go API:
// `pipeline run` is Run(ctx, cfg, env); Compare, Tune, ExportFromRun, OpenEmbedder and the
// gallery Index build on the same pieces. cmd/pipeline is a thin command line over it.
//
// # A run
//
// Run (run.go) checks everything before it writes anything, then goes through these stages:
//
//  1. Prepare: load the dataset (package data), split it by class into training, validation and
//     evaluated classes, fit the defaults to the data (adapt.go), open the backbone (package
//     backbone) and check the memory budget (bounds.go).
//  2. Features: the backbone's features of every image, and of its mirror image, through the
//     on-disk feature cache (extract.go).
//  3. Baseline: the metrics of the raw features on the evaluated classes (package metrics).
//  4. Train: the embedding head on the features (headtrain.go), or the backbone's last blocks
//     and the head together (tailtrain.go, tailtrunk.go), both through fit (fitrun.go) and
//     package train's loop; an ensemble of heads in ensemble.go. Checkpoints (checkpoint.go)
//     let Resume (resume.go) continue an interrupted run.
//  5. Evaluate and choose: the trained embeddings on the evaluated classes, never exporting a
//     model worse than the raw features without saying so (choose.go).
//  6. Export: the cut backbone and the head as one ONNX model, reloaded and checked in
//     onnxruntime (exportrun.go, tailexport.go, package export), and its variants (int8,
//     without the mirror pass: exportvariants.go, exportfolder.go).
//  7. Report: metrics.json (summary.go) and report.html (reportrun.go, package report).
//
// The run folder is replaced only by a run that succeeds (runfolder.go, runlock_*.go); every
// file is written atomically.
//
// # Where each concept lives
//
//	config             config.go (Config, defaults, validation), configform.go ({name, args}
//	                   components, YAML errors), presets.go, bounds.go
//	loss               package head (the Group Loss, its baselines, the embedding head)
//	sampler, optimizer package train (sampler.go, optim.go, the learning-rate schedule)
//	metric             package metrics (Recall@K, NMI, AMI, MAP@R, R-precision)
//	cut, decode        package backbone (cut, onnxruntime in backbone/ort, the trainable graph
//	                   decoded from ONNX in backbone/graph)
//	export             package export (ONNX assembly, int8, Triton), exportrun.go
//	inference          embedder.go (OpenEmbedder, Embedder.Embed)
//	index, search      index.go (the gallery index file, exact search), package pggallery
//	                   (PostgreSQL + pgvector)
//	.npy               npy.go
//	compare, tune      compare.go, tunerun.go (the search itself in package tune)
//	distributed embed  package dist (shards, a NATS JetStream work queue)
//	bench tail step    tailbench.go (the rest of `pipeline bench` is in cmd/pipeline)
//
// Errors: an invalid config wraps config.ErrInvalid (exit code 2 of the command); a NaN or Inf is a
// NonFiniteError (exit code 3); Hint returns the suggestion attached to an error.
package pipeline
