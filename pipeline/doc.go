// Package pipeline runs the Group Loss experiment end to end: `pipeline run` is Run(ctx, cfg,
// env); Compare, Tune and ExportFromRun build on the same pieces. cmd/pipeline is a thin command
// line over it. Programs that only embed images use package infer, which links neither gorgonia
// nor the plotting code.
//
// # A run
//
// Run (run.go) checks everything before it writes anything, then goes through its stages in
// runner.run, one short sequence:
//
//  1. Prepare: load the dataset (package data), split it by class into training, validation and
//     evaluated classes, fit the defaults to the data (adapt.go), open the backbone (package
//     backbone), decode the tail to train when asked (tailsetup.go) and check the memory budget
//     (bounds.go).
//  2. Features: the backbone's features of every image and of its mirror image, through the
//     on-disk feature cache (extract.go); for tail training also the activations at the cut
//     (tailactivations.go).
//  3. Baselines: the metrics of the raw features on the evaluated classes (package metrics).
//  4. Train: one training call for every kind of model (fitrun.go: a problem, runner.train). A
//     model (model.go) is a head over a feature source: the frozen backbone's cached features
//     (headtrain.go), or the backbone's last blocks trained with the head as one gorgonia graph
//     (tailtrain.go, tailtrunk.go); an ensemble of either (ensemble.go). Checkpoints
//     (checkpoint.go) let Resume (resume.go) continue an interrupted run.
//  5. Evaluate and choose: the trained embeddings on the evaluated classes, and the export
//     choice: the trained model only when the validation classes show it beats the raw
//     features, else the raw features, saying why (choose.go).
//  6. Export: the cut backbone (fine-tuned for a tail) and the head as one ONNX model, checked in
//     onnxruntime (exportrun.go, tailexport.go, package export), and its variants (int8, without
//     the mirror pass: exportvariants.go; from a run folder: exportfolder.go).
//  7. Report: metrics.json (summary.go) and report.html (reportrun.go, package report).
//
// The run folder is replaced only by a run that succeeds (runfolder.go, runlock_*.go); every
// file is written atomically (internal/atomicfile).
//
// # Where each concept lives
//
//	config             package config (the run config, {name, args} components, YAML errors,
//	                   presets, the typed enums), bounds.go (memory budget), adapt.go (defaults
//	                   fitted to the data)
//	loss               package head (the Group Loss, its baselines, the embedding head)
//	sampler, optimizer package train (sampler.go, optim.go, the learning-rate schedule)
//	metric             package metrics (Recall@K, NMI, AMI, MAP@R, R-precision, the k-means plan)
//	cut, decode        package backbone (cut, onnxruntime in backbone/ort, the trainable
//	                   gorgonia graph decoded from ONNX in backbone/graph)
//	model, training    model.go, fitrun.go, headtrain.go, tailtrain.go, ensemble.go
//	export             package export (ONNX assembly, int8, Triton), exportrun.go
//	inference          package infer (OpenEmbedder, Embedder.Embed)
//	index, search      package gallery (the gallery index file, exact search), package
//	                   pggallery (PostgreSQL + pgvector)
//	.npy               package npy
//	row kernels        internal/rowops (gather, mean, mirror, L2 normalization, top-k)
//	compare, tune      compare.go, tunerun.go (the search itself in package tune)
//	distributed embed  package dist (shards, a NATS JetStream work queue)
//	bench tail step    tailbench.go (the rest of `pipeline bench` is in cmd/pipeline)
//
// Errors: an invalid config wraps config.ErrInvalid (exit code 2 of the command); a NaN or Inf is a
// NonFiniteError (exit code 3); Hint returns the suggestion attached to an error.
package pipeline
