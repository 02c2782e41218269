// Command pipeline fine-tunes image embeddings with the Group Loss: ONNX backbone in, ONNX
// embedding model out.
//
// Usage:
//
//	pipeline run [--config FILE] [--data DIR|CSV] [--backbone FILE] [--out DIR] [flags]
//	pipeline run --resume RUN_DIR [-v] [--json]
//	pipeline compare [--config FILE] [--seeds 1,2,3] [--out DIR] [flags]
//	pipeline tune --config FILE --space SPACE.yaml --trials N --out DIR [flags]
//	pipeline bench [--out FILE.json] [--images N] [--reference-python PYTHON] [flags]
//	pipeline inspect MODEL.onnx [--json]
//	pipeline doctor [--onnxruntime FILE] [--json]
//	pipeline export --run RUN_FOLDER [--int8] [--flip-tta=false] --out FILE [flags]
//	pipeline embed --model MODEL.onnx --data DIR|CSV --out FILE.npy [--shard i/n] [flags]
//	pipeline embed --model MODEL.onnx --data DIR|CSV --queue nats://HOST:PORT --submit | --collect --out FILE.npy
//	pipeline worker --queue nats://HOST:PORT --model MODEL.onnx [--idle 30s] [flags]
//	pipeline eval --model MODEL.onnx --data DIR|CSV | --embeddings FILE.npy [--labels FILE.csv] [flags]
//	pipeline index --model MODEL.onnx --data DIR|CSV | --embeddings FILE.npy [--labels FILE.csv] --out FILE | --to postgres://...
//	pipeline search --index FILE|postgres://... --query IMG [--query IMG2 ...] | --query-npy FILE.npy [-k 5] [--model MODEL.onnx] [--json]
//	pipeline bench-memory [--n 100000] [--dim 512] [--out FILE.json]
//	pipeline serve --model MODEL.onnx [--index GALLERY] [--addr 127.0.0.1:8080] [--name NAME] [flags]
//	pipeline export --model MODEL.onnx --triton DIR [--name NAME] [--max-batch N]
//	pipeline version
//
// Exit codes:
//
//	0  success
//	1  the run failed (bad input, a failed step, a quality check)
//	2  bad usage (unknown command or flag, invalid config)
//	3  training stopped on a non-finite value (NaN/Inf); the last good checkpoint is kept
//	130 interrupted (Ctrl-C, SIGTERM); the run folder keeps the last checkpoint: --resume continues.
//	    A second signal, or 30 s without stopping after the first, exits at once
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/grouploss/pipeline/pipeline"
)

const usage = `pipeline: Group Loss metric learning on ONNX backbones.

Commands:
  run       import an ONNX backbone, fine-tune with the Group Loss, evaluate, export ONNX
  compare   raw features, baselines, the Group Loss and an ensemble on one protocol, several seeds: a table
  tune      hyperparameter search on the validation classes (quasi-random trials, successive halving)
  bench     measure extraction (pipeline vs bare onnxruntime) and head training speed, as JSON
  inspect   describe an ONNX model: inputs, outputs, opsets, metadata, ops, candidate feature tensors
  doctor    check onnxruntime, ../shared data, the default backbone, the CPU and Go
  export    write a variant of a run's model (int8, without the mirror pass), scored and timed,
            or a Triton model repository for a model (--triton DIR)
  embed     write the embeddings of a dataset as .npy (+ .csv labels) with an exported model
  worker    embed the batches of a NATS JetStream work queue (see embed --queue)
  eval      Recall@K, NMI, MAP@R, R-precision of a model on a dataset, or of .npy embeddings
  index     write a gallery index (embeddings, paths, labels, model identity) for search
  search    exact k nearest neighbours of query images (or .npy embeddings) in a gallery index
  bench-memory  peak memory and time of index, search and eval on N random embeddings, as JSON
  serve     serve a model (and a gallery) over HTTP: KServe v2 / Triton protocol, /v1/embed, /v1/search
  version   print the version

Run 'pipeline COMMAND --help' for the flags of a command.

Exit codes: 0 ok, 1 failure, 2 bad usage or config, 3 NaN/Inf during training, 130 interrupted.
`

// commands are the subcommands, each in its own file (cmd_<name>.go).
var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"run":          cmdRun,
	"compare":      cmdCompare,
	"tune":         cmdTune,
	"bench":        cmdBench,
	"inspect":      cmdInspect,
	"doctor":       cmdDoctor,
	"export":       cmdExport,
	"embed":        cmdEmbed,
	"worker":       cmdWorker,
	"eval":         cmdEval,
	"index":        cmdIndex,
	"search":       cmdSearch,
	"bench-memory": cmdBenchMemory,
	"serve":        cmdServe,
	"version":      cmdVersion,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "pipeline: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	ctx, stop := interruptContext(stderr, interruptGrace, os.Exit)
	defer stop()
	return exitCode(cmd(ctx, args[1:], stdout, stderr), stderr)
}

func cmdVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	fmt.Fprintln(stdout, pipeline.Version)
	return nil
}
