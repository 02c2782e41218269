// Package infer computes image embeddings with an exported ONNX embedding model in onnxruntime:
// OpenEmbedder loads the model, Embed (EmbedFiles, EmbedDataset, EmbedTensors) runs it. It
// depends only on onnxruntime (backbone/ort) and the preprocessing (pipeline/data), so a program
// that only embeds images does not link the training stack (gorgonia, gonum/plot);
// TestDependencies keeps it so. (Not named embed, which would shadow the standard library's
// embed package.)
package infer

import (
	"context"
	"fmt"
	"image"
	"io"
	"runtime"
	"strconv"
	"sync"

	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/hint"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/data"
)

// Embedder computes image embeddings with an ONNX embedding model: one float32 image input
// [batch, 3, H, W] and one float32 output [batch, D], such as the model.onnx that `pipeline run`
// exports (input "images", output "embeddings", L2-normalized rows). The preprocessing comes
// from the model's metadata_props (the preprocess.* keys) unless WithPreprocess gives it. An
// Embedder is safe for concurrent use; Close releases its onnxruntime session.
type Embedder struct {
	path    string
	input   string // the model's input name
	output  string // the model's output name
	sess    *ort.Session
	pre     data.Preprocess
	dim     int
	fixed   int // batch size the model pins, 0 when the batch axis is dynamic
	batch   int
	workers int
}

var _ io.Closer = (*Embedder)(nil)

// EmbedderOption configures OpenEmbedder.
type EmbedderOption func(*embedderOptions)

type embedderOptions struct {
	pre     *data.Preprocess
	lib     string
	threads int
	batch   int
	workers int
}

// WithPreprocess sets the preprocessing, overriding the model's metadata; it is required for
// models without preprocess.* metadata. Its Width and Height must match the model's input.
func WithPreprocess(p data.Preprocess) EmbedderOption {
	return func(o *embedderOptions) { o.pre = &p }
}

// WithLibraryPath sets the onnxruntime shared library ("" resolves it with ort.LibraryPath:
// $ONNXRUNTIME_SHARED_LIBRARY_PATH, then .deps/onnxruntime).
func WithLibraryPath(path string) EmbedderOption {
	return func(o *embedderOptions) { o.lib = path }
}

// WithThreads sets onnxruntime's intra-op threads (0, the default, lets onnxruntime decide).
func WithThreads(n int) EmbedderOption {
	return func(o *embedderOptions) { o.threads = n }
}

// WithBatchSize sets how many images go through the model at once (default 32).
func WithBatchSize(n int) EmbedderOption {
	return func(o *embedderOptions) { o.batch = n }
}

// WithWorkers sets the number of image-decoding goroutines (default runtime.GOMAXPROCS(0)).
func WithWorkers(n int) EmbedderOption {
	return func(o *embedderOptions) { o.workers = n }
}

// OpenEmbedder loads the embedding model at path in onnxruntime, initializing onnxruntime on
// first use. The model must have one float32 input [batch, 3, H, W] and one float32 output
// [batch, D]; its preprocessing is read from metadata_props (see data.PreprocessFromMetadata)
// unless WithPreprocess is given, and a model with neither is an error.
func OpenEmbedder(path string, opts ...EmbedderOption) (*Embedder, error) {
	o := embedderOptions{batch: 32}
	for _, opt := range opts {
		opt(&o)
	}
	if o.batch < 1 {
		return nil, fmt.Errorf("infer: embedder: batch size %d, want >= 1", o.batch)
	}
	if o.workers <= 0 {
		o.workers = runtime.GOMAXPROCS(0)
	}
	if err := ort.Init(ort.LibraryPath(o.lib)); err != nil {
		return nil, fmt.Errorf("infer: %w", err)
	}
	raw, err := onnxpb.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("infer: %w", err)
	}
	m, err := onnxpb.Unmarshal(raw, path)
	if err != nil {
		return nil, fmt.Errorf("infer: %w", err)
	}
	g := m.GetGraph()
	ins, outs := onnxpb.RealInputs(g), g.GetOutput()
	if len(ins) != 1 || len(outs) != 1 {
		return nil, fmt.Errorf("infer: embedding model %q has %d inputs and %d outputs, want 1 image input [batch,3,H,W] and 1 output [batch,D]",
			path, len(ins), len(outs))
	}
	inDims, _, okIn := onnxpb.Shape(ins[0])
	outDims, _, okOut := onnxpb.Shape(outs[0])
	if !okIn || len(inDims) != 4 || inDims[1] != 3 || inDims[2] <= 0 || inDims[3] <= 0 {
		return nil, fmt.Errorf("infer: embedding model %q: input %q has shape %v, want [batch,3,H,W]", path, ins[0].GetName(), inDims)
	}
	if !okOut || len(outDims) != 2 || outDims[1] <= 0 {
		return nil, fmt.Errorf("infer: embedding model %q: output %q has shape %v, want [batch,D]", path, outs[0].GetName(), outDims)
	}
	meta := map[string]string{}
	for _, p := range m.GetMetadataProps() {
		meta[p.GetKey()] = p.GetValue()
	}
	var pre data.Preprocess
	if o.pre != nil {
		pre = *o.pre
		if err := pre.Validate(); err != nil {
			return nil, fmt.Errorf("infer: embedding model %q: %w", path, err)
		}
	} else {
		if _, ok := meta[data.MetaSize]; !ok {
			return nil, hint.With(fmt.Errorf("infer: embedding model %q has no %s metadata: its preprocessing is unknown", path, data.MetaSize),
				"use a model exported by `pipeline run`, or give the preprocessing (infer.WithPreprocess)")
		}
		if pre, err = data.PreprocessFromMetadata(meta); err != nil {
			return nil, fmt.Errorf("infer: embedding model %q: %w", path, err)
		}
	}
	if int64(pre.Height) != inDims[2] || int64(pre.Width) != inDims[3] {
		return nil, fmt.Errorf("infer: embedding model %q takes %dx%d images (WxH) but the preprocessing makes %dx%d",
			path, inDims[3], inDims[2], pre.Width, pre.Height)
	}
	dim := int(outDims[1])
	if s, ok := meta["embedding_dim"]; ok {
		if v, err := strconv.Atoi(s); err != nil || v != dim {
			return nil, fmt.Errorf("infer: embedding model %q: metadata embedding_dim=%q but the output %q is %d wide",
				path, s, outs[0].GetName(), dim)
		}
	}
	sess, err := ort.NewSession(raw, ort.Options{Threads: o.threads})
	if err != nil {
		return nil, fmt.Errorf("infer: embedding model %q: %w", path, err)
	}
	e := &Embedder{path: path, input: ins[0].GetName(), output: outs[0].GetName(), sess: sess, pre: pre, dim: dim,
		batch: o.batch, workers: o.workers}
	if inDims[0] > 0 {
		e.fixed = int(inDims[0])
	}
	return e, nil
}

// Dim returns D, the length of each embedding.
func (e *Embedder) Dim() int { return e.dim }

// Names returns the names of the model's image input and embedding output.
func (e *Embedder) Names() (input, output string) { return e.input, e.output }

// Preprocess returns the preprocessing applied to images before the model.
func (e *Embedder) Preprocess() data.Preprocess { return e.pre }

// Close releases the onnxruntime session. It is safe to call more than once.
func (e *Embedder) Close() error { return e.sess.Close() }

// Embed returns one embedding per image (len(images) rows of Dim float32 values, the model's
// output as is: L2-normalized for models exported by this tool). Images of any size and color
// model are preprocessed with the Embedder's preprocessing, in parallel.
func (e *Embedder) Embed(images []image.Image) ([][]float32, error) {
	chw := e.pre.Size()
	out := make([]float32, len(images)*e.dim)
	in := make([]float32, min(e.batch, len(images))*chw)
	for start := 0; start < len(images); start += e.batch {
		n := min(e.batch, len(images)-start)
		if err := e.tensors(images[start:start+n], in[:n*chw]); err != nil {
			return nil, err
		}
		if err := e.run(in[:n*chw], n, out[start*e.dim:(start+n)*e.dim]); err != nil {
			return nil, err
		}
	}
	return rows(out, len(images), e.dim), nil
}

// EmbedTensors returns the embeddings (n x Dim, row-major) of n images already preprocessed into
// in (n x 3 x H x W, NCHW, as Preprocess().Tensor makes them), in one onnxruntime run (in runs of
// the model's pinned batch size when it has one).
func (e *Embedder) EmbedTensors(in []float32, n int) ([]float32, error) {
	if n < 1 || len(in) != n*e.pre.Size() {
		return nil, fmt.Errorf("infer: embed: %d tensor values for %d images of 3x%dx%d", len(in), n, e.pre.Height, e.pre.Width)
	}
	out := make([]float32, n*e.dim)
	if err := e.run(in, n, out); err != nil {
		return nil, err
	}
	return out, nil
}

// tensors preprocesses imgs into dst (len(imgs) x 3 x H x W) with up to e.workers goroutines.
func (e *Embedder) tensors(imgs []image.Image, dst []float32) error {
	chw := e.pre.Size()
	errs := make([]error, len(imgs))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < min(e.workers, len(imgs)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if imgs[i] == nil {
					errs[i] = fmt.Errorf("infer: embed: image %d is nil", i)
					continue
				}
				errs[i] = e.pre.Tensor(imgs[i], dst[i*chw:(i+1)*chw])
			}
		}()
	}
	for i := range imgs {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("infer: embed: image %d: %w", i, err)
		}
	}
	return nil
}

// EmbedFiles decodes the JPEG or PNG files (in parallel) and returns their embeddings, one row
// of Dim float32 values per path, in order. The first file that does not decode is an error
// naming it.
func (e *Embedder) EmbedFiles(paths []string) ([][]float32, error) {
	ds := &data.Dataset{Items: make([]data.Item, len(paths)), Classes: []string{""}}
	for i, p := range paths {
		ds.Items[i] = data.Item{Path: p}
	}
	emb, err := e.EmbedDataset(context.Background(), ds, nil)
	if err != nil {
		return nil, err
	}
	return rows(emb, len(paths), e.dim), nil
}

// EmbedDataset returns the embeddings of every item of ds, in item order, as a (len(ds.Items),
// Dim) row-major float32 matrix. Images are decoded in parallel ahead of the model; progress,
// when not nil, receives a progress line (see data.Progress). The first file that does not
// decode is an error (a *data.ImageError naming it); cancelling ctx stops early with ctx's error.
func (e *Embedder) EmbedDataset(ctx context.Context, ds *data.Dataset, progress io.Writer) ([]float32, error) {
	n := len(ds.Items)
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	var prog *data.Progress
	if progress != nil {
		prog = data.NewProgress(progress, "embed", n)
	}
	out := make([]float32, n*e.dim)
	loader := data.Loader{Preprocess: e.pre, BatchSize: e.batch, Workers: e.workers}
	err := loader.Each(ctx, ds, items, func(b data.Batch) error {
		defer b.Release()
		if err := e.run(b.Data[:b.N*e.pre.Size()], b.N, out[b.Start*e.dim:(b.Start+b.N)*e.dim]); err != nil {
			return err
		}
		if prog != nil {
			prog.Add(b.N)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("infer: embed: %w", err)
	}
	if prog != nil {
		prog.Done()
	}
	return out, nil
}

// run computes the embeddings of n preprocessed images in into out (n x Dim), in chunks of the
// model's pinned batch size when it has one (the last chunk zero-padded).
func (e *Embedder) run(in []float32, n int, out []float32) error {
	if e.fixed == 0 {
		if err := e.sess.Run(in, n, out); err != nil {
			return fmt.Errorf("infer: embedding model %q: %w", e.path, err)
		}
		return nil
	}
	chw := e.pre.Size()
	pad := make([]float32, e.fixed*chw)
	res := make([]float32, e.fixed*e.dim)
	for s := 0; s < n; s += e.fixed {
		k := min(e.fixed, n-s)
		clear(pad)
		copy(pad, in[s*chw:(s+k)*chw])
		if err := e.sess.Run(pad, e.fixed, res); err != nil {
			return fmt.Errorf("infer: embedding model %q: %w", e.path, err)
		}
		copy(out[s*e.dim:(s+k)*e.dim], res[:k*e.dim])
	}
	return nil
}

// rows splits the n x d row-major matrix x into n row slices sharing x's memory.
func rows(x []float32, n, d int) [][]float32 {
	r := make([][]float32, n)
	for i := range r {
		r[i] = x[i*d : (i+1)*d : (i+1)*d]
	}
	return r
}
