package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/grouploss/pipeline/pipeline/export"
)

// tritonFlags are the flags of `pipeline export --triton`.
type tritonFlags struct {
	model, dir, name string
	maxBatch         int
}

func (o *tritonFlags) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.model, "model", "", "embedding model `FILE` to put in the Triton repository")
	fs.StringVar(&o.dir, "triton", "", "Triton model repository `DIR`: writes DIR/NAME/config.pbtxt and DIR/NAME/1/model.onnx")
	fs.StringVar(&o.name, "name", "", "model name in the repository (default: the model file name without extension)")
	fs.IntVar(&o.maxBatch, "max-batch", 32, "Triton max_batch_size (the dynamic batcher's largest batch)")
}

// cmdExportTriton is `pipeline export --model MODEL.onnx --triton DIR [--name N] [--max-batch N]`.
func cmdExportTriton(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var o tritonFlags
	fs := newFlagSet("pipeline export", stderr, "usage: pipeline export --model MODEL.onnx --triton DIR [--name NAME] [--max-batch N]\n\n"+
		"Writes a Triton model repository entry for the model: DIR/NAME/config.pbtxt (platform onnxruntime_onnx,\n"+
		"the model's inputs and outputs, max_batch_size, dynamic_batching) and DIR/NAME/1/model.onnx.\n\n")
	o.addFlags(fs)
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	if o.model == "" || o.dir == "" {
		return fmt.Errorf("%w: export --triton needs --model and --triton", errUsage)
	}
	if o.maxBatch < 1 {
		return fmt.Errorf("%w: --max-batch %d, want >= 1", errUsage, o.maxBatch)
	}
	c, err := export.WriteTriton(o.dir, o.model, export.TritonOptions{Name: o.name, MaxBatch: o.maxBatch})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s (max_batch_size %d)\n", filepath.Join(o.dir, c.Name, "config.pbtxt"),
		filepath.Join(o.dir, c.Name, "1", "model.onnx"), c.MaxBatchSize)
	return nil
}
