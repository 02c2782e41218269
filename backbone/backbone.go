package backbone

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/weights"
)

// Options configures Open.
type Options struct {
	Feature     string // feature tensor; "" picks Info.Auto
	LibraryPath string // onnxruntime shared library; "" resolves it with ort.LibraryPath
	Threads     int    // onnxruntime intra-op threads; 0 lets onnxruntime decide
	// Dequantize says when a quantized (int8) model runs as its float conversion
	// (weights.DequantizeModel): DequantizeAuto on x86 CPUs without VNNI, where onnxruntime's int8
	// kernels saturate and lose accuracy, DequantizeAlways, or DequantizeNever ("" too). It
	// changes Hash. No effect on float models.
	Dequantize string
}

// Backbone is a frozen feature extractor: a model cut at a feature tensor and loaded in
// onnxruntime. It is safe for concurrent use (runs are serialized).
type Backbone struct {
	info *Info
	// model is the whole source model as it runs (its float conversion when float is set).
	model *onnx.ModelProto
	cut   *onnx.ModelProto
	ci    *CutInfo
	sess  *ort.Session
	hash  string
	// float: a quantized model runs as its float conversion (Options.Dequantize).
	float bool
}

var _ io.Closer = (*Backbone)(nil)

// Open loads the ONNX model at path (with its external data, read from beside it and inlined:
// onnxruntime never resolves file locations itself), cuts it at opts.Feature (see Cut) and
// creates an onnxruntime session, initializing onnxruntime on first use.
func Open(path string, opts Options) (*Backbone, error) {
	if err := ort.Init(ort.LibraryPath(opts.LibraryPath)); err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	data, err := onnxpb.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	m, err := onnxpb.UnmarshalDir(data, path, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	info := inspect(m, path, data)
	variant := ""
	if opts.Dequantize != "" && UseFloat(opts.Dequantize, info, CPU()) {
		if m, _, err = weights.DequantizeModel(m); err != nil {
			return nil, fmt.Errorf("backbone: %q: int8 to float: %w", path, err)
		}
		variant = "\nfloat"
	}
	feature := opts.Feature
	if variant != "" && feature == "" {
		// The int8 model's automatic choice: in the float model it is the same value, clamped to
		// its quantization range as the int8 kernel does (the pooling's own output is unclamped).
		feature = info.Auto
	}
	cut, ci, err := Cut(m, feature)
	if err != nil {
		var fe *FeatureError
		if errors.As(err, &fe) {
			fe.Model = fmt.Sprintf("%q", path)
		}
		return nil, err
	}
	model, err := onnxpb.Marshal(cut)
	if err != nil {
		return nil, fmt.Errorf("backbone: %q: %w", path, err)
	}
	sess, err := ort.NewSession(model, ort.Options{Threads: opts.Threads})
	if err != nil {
		return nil, fmt.Errorf("backbone: %q cut at %q: %w", path, ci.Feature, err)
	}
	in, out := sess.InputShape(), sess.OutputShape()
	if len(in) != 3 || int(in[0]) != ci.InputShape[0] || int(in[1]) != ci.InputShape[1] || int(in[2]) != ci.InputShape[2] ||
		len(out) != 1 || int(out[0]) != ci.Dim {
		sess.Close()
		return nil, fmt.Errorf("backbone: %q cut at %q: session shapes %v -> %v, want %v -> [%d]",
			path, ci.Feature, in, out, ci.InputShape, ci.Dim)
	}
	sum := sha256.Sum256([]byte(info.SHA256 + "\n" + ci.Feature + variant))
	return &Backbone{info: info, model: m, cut: cut, ci: ci, sess: sess, hash: hex.EncodeToString(sum[:]), float: variant != ""}, nil
}

// Features computes the features of n images: in holds n*C*H*W float32 values (NCHW, already
// preprocessed), out receives n*D values, row-major [n, D]. Longer slices are allowed; only
// their prefixes are used.
func (b *Backbone) Features(in []float32, n int, out []float32) error {
	if err := b.sess.Run(in, n, out); err != nil {
		return fmt.Errorf("backbone: features of %q: %w", b.info.Path, err)
	}
	return nil
}

// Dim returns D, the feature size per image.
func (b *Backbone) Dim() int { return b.ci.Dim }

// InputShape returns the per-image input shape C, H, W.
func (b *Backbone) InputShape() [3]int { return b.ci.InputShape }

// Hash identifies the features: hex SHA-256 of the source file's SHA-256 and the feature
// tensor name. Use it to key feature caches.
func (b *Backbone) Hash() string { return b.hash }

// Cut returns the cut model (input [batch, C, H, W], output "features" [batch, D]) for export.
// Callers must not modify it.
func (b *Backbone) Cut() *onnx.ModelProto { return b.cut }

// Model returns the whole source model as it runs: its float conversion when Dequantized. It is
// what a caller that needs more of the model than the cut (fine-tuning its tail) starts from,
// without reading and converting the file again. Callers must not modify it.
func (b *Backbone) Model() *onnx.ModelProto { return b.model }

// CutInfo describes the cut.
func (b *Backbone) CutInfo() *CutInfo { return b.ci }

// Info describes the source model.
func (b *Backbone) Info() *Info { return b.info }

// Dequantized reports whether a quantized model runs as its float conversion.
func (b *Backbone) Dequantized() bool { return b.float }

// Close releases the onnxruntime session.
func (b *Backbone) Close() error { return b.sess.Close() }

// RuntimeVersion returns the version of the loaded onnxruntime library ("1.30.0"), or "" before
// the first successful Open.
func RuntimeVersion() string { return ort.Version() }
