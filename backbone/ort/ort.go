// Package ort adapts onnxruntime (through github.com/yalue/onnxruntime_go, cgo) to plain Go
// types: it finds and loads the shared library once per process and runs single-input,
// single-output float32 models with a dynamic batch axis.
package ort

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/internal/onnxpb"
	ortgo "github.com/yalue/onnxruntime_go"
)

// EnvVar is the environment variable holding the path of the onnxruntime shared library.
const EnvVar = "ONNXRUNTIME_SHARED_LIBRARY_PATH"

// DefaultRelPath is where `make ort` installs the library, relative to the repository root.
var DefaultRelPath = filepath.Join(".deps", "onnxruntime", "libonnxruntime.so.1")

// MaxThreads bounds Options.Threads: onnxruntime starts that many threads per session, each with
// its own stack (100000 exhausted the process), and beyond the cores they only contend.
const MaxThreads = 1024

// telemetryEnv is the environment variable that turns onnxruntime's telemetry off (see Init).
const telemetryEnv = "ORT_DISABLE_TELEMETRY"

// ErrNotInitialized is returned by NewSession before a successful Init.
var ErrNotInitialized = errors.New("ort: onnxruntime is not initialized (call Init first)")

// LibraryPath resolves the onnxruntime shared library: flagValue when non-empty, else the
// environment variable ONNXRUNTIME_SHARED_LIBRARY_PATH, else .deps/onnxruntime/libonnxruntime.so.1
// found in the current directory, the executable's directory, or one of their parents. It
// returns "" when nothing is found.
func LibraryPath(flagValue string) string {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	return libraryPath(flagValue, os.Getenv(EnvVar), starts)
}

func libraryPath(flagValue, env string, starts []string) string {
	if flagValue != "" {
		return flagValue
	}
	if env != "" {
		return env
	}
	for _, dir := range starts {
		for {
			p := filepath.Join(dir, DefaultRelPath)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return ""
}

// LibraryError reports an onnxruntime library that is missing or cannot be loaded.
type LibraryError struct {
	Path string // "" when no library was found
	Err  error  // the loader's error, nil when the file is missing
}

const howToFix = "run `make ort` or set " + EnvVar + " / --onnxruntime"

func (e *LibraryError) Error() string {
	switch {
	case e.Path == "":
		return "ort: onnxruntime library not found (no --onnxruntime flag, no " + EnvVar +
			", no " + DefaultRelPath + " above the current or executable directory): " + howToFix
	case e.Err == nil:
		return fmt.Sprintf("ort: onnxruntime library not found at %q: %s", e.Path, howToFix)
	}
	return fmt.Sprintf("ort: cannot load onnxruntime library %q (%v): %s", e.Path, e.Err, howToFix)
}

func (e *LibraryError) Unwrap() error { return e.Err }

var (
	initMu   sync.Mutex
	initPath string
)

// Init loads the onnxruntime shared library at path and initializes the process-wide
// environment. Calling it again with the same path is a no-op; a different path is an error.
// A missing or unusable library gives a *LibraryError saying how to fix it.
func Init(path string) error {
	initMu.Lock()
	defer initMu.Unlock()
	abs := path
	if path != "" {
		if a, err := filepath.Abs(path); err == nil {
			abs = a
		}
	}
	if initPath != "" && abs == initPath {
		return nil
	}
	if path == "" {
		return &LibraryError{}
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		return &LibraryError{Path: path}
	}
	if initPath != "" {
		return fmt.Errorf("ort: onnxruntime is already initialized from %q, cannot switch to %q", initPath, abs)
	}
	// onnxruntime's telemetry (Linux builds since 1.2x) starts with the environment: it writes
	// /tmp/mat-debug-<pid>.log, /tmp/.ses and ~/.cache/Microsoft/DeveloperTools/.onnxruntime/, reads
	// /etc/machine-id and resolves a telemetry host. ORT_DISABLE_TELEMETRY, read when the
	// environment is created, stops all of it; DisableTelemetry (DisableTelemetryEvents) alone
	// comes too late for the files. Set here, before the library is loaded, for every caller.
	if err := os.Setenv(telemetryEnv, "1"); err != nil {
		return &LibraryError{Path: path, Err: err}
	}
	ortgo.SetSharedLibraryPath(path)
	if err := ortgo.InitializeEnvironment(ortgo.WithLogLevelError()); err != nil {
		return &LibraryError{Path: path, Err: err}
	}
	if err := ortgo.DisableTelemetry(); err != nil {
		return &LibraryError{Path: path, Err: err}
	}
	initPath = abs
	return nil
}

// Version returns the onnxruntime version ("1.30.0"), or "" before Init.
func Version() string {
	initMu.Lock()
	defer initMu.Unlock()
	if initPath == "" {
		return ""
	}
	return ortgo.GetVersion()
}

// Options configures a Session.
type Options struct {
	Threads int // intra-op threads; 0 lets onnxruntime decide
	// Unoptimized turns onnxruntime's graph optimizations off: a QDQ model then runs its
	// QuantizeLinear/DequantizeLinear and float ops as written, exact int8 arithmetic without the
	// int16 saturation of the fused u8s8 kernels on x86 CPUs without VNNI (slower).
	Unoptimized bool
}

// Session runs a model with one float32 input [batch, ...] and one float32 output
// [batch, ...]. Input and output tensors are allocated once per batch size and reused (up to
// maxCached sizes). Run is safe for concurrent use (calls are serialized).
type Session struct {
	mu       sync.Mutex
	sess     *ortgo.DynamicAdvancedSession
	inName   string
	outName  string
	inShape  []int64 // per sample
	outShape []int64 // per sample
	inSize   int
	outSize  int
	fixed    int // batch size the model pins, 0 when dynamic
	cache    map[int]*binding
	tick     uint64
}

type binding struct {
	in, out *ortgo.Tensor[float32]
	used    uint64
}

const maxCached = 4

var _ io.Closer = (*Session)(nil)

// NewSession creates a session for a serialized ONNX model. The model must have exactly one
// float32 input and one float32 output whose first axis is the batch and whose other axes are
// fixed.
func NewSession(model []byte, opts Options) (*Session, error) {
	m, err := parseModel(model, "session model")
	if err != nil {
		return nil, err
	}
	ins := onnxpb.RealInputs(m.GetGraph())
	outs := m.GetGraph().GetOutput()
	if len(ins) != 1 || len(outs) != 1 {
		return nil, fmt.Errorf("ort: model has %d inputs and %d outputs, want 1 and 1", len(ins), len(outs))
	}
	s := &Session{inName: ins[0].GetName(), outName: outs[0].GetName(), cache: make(map[int]*binding)}
	var inBatch, outBatch int64
	if s.inShape, inBatch, err = sampleShape(ins[0]); err != nil {
		return nil, err
	}
	if s.outShape, outBatch, err = sampleShape(outs[0]); err != nil {
		return nil, err
	}
	if inBatch > 0 {
		s.fixed = int(inBatch)
	} else if outBatch > 0 {
		s.fixed = int(outBatch)
	}
	s.inSize, s.outSize = int(prod(s.inShape)), int(prod(s.outShape))

	so, err := sessionOptions(opts)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	s.sess, err = ortgo.NewDynamicAdvancedSessionWithONNXData(model, []string{s.inName}, []string{s.outName}, so)
	if err != nil {
		return nil, fmt.Errorf("ort: create session: %w", err)
	}
	return s, nil
}

// parseModel checks that onnxruntime is initialized and parses a serialized model (name is used
// in errors).
func parseModel(model []byte, name string) (*onnx.ModelProto, error) {
	initMu.Lock()
	ready := initPath != ""
	initMu.Unlock()
	if !ready {
		return nil, ErrNotInitialized
	}
	m, err := onnxpb.Unmarshal(model, name)
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	return m, nil
}

// sessionOptions builds onnxruntime's session options for opts; the caller destroys them.
func sessionOptions(opts Options) (*ortgo.SessionOptions, error) {
	so, err := ortgo.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("ort: session options: %w", err)
	}
	fail := func(err error) (*ortgo.SessionOptions, error) {
		so.Destroy()
		return nil, err
	}
	if opts.Threads < 0 || opts.Threads > MaxThreads {
		return fail(fmt.Errorf("ort: %d threads, want 0 (onnxruntime decides) to %d", opts.Threads, MaxThreads))
	}
	if opts.Threads > 0 {
		if err := so.SetIntraOpNumThreads(opts.Threads); err != nil {
			return fail(fmt.Errorf("ort: set %d threads: %w", opts.Threads, err))
		}
		if err := so.SetInterOpNumThreads(1); err != nil {
			return fail(fmt.Errorf("ort: set inter-op threads: %w", err))
		}
	}
	if opts.Unoptimized {
		if err := so.SetGraphOptimizationLevel(ortgo.GraphOptimizationLevelDisableAll); err != nil {
			return fail(fmt.Errorf("ort: disable graph optimizations: %w", err))
		}
	}
	// Spinning intra-op threads busy-wait between kernels and take the CPU from the goroutines
	// that decode the next images; without spinning a frozen MobileNetV2 costs ~3.9 instead of
	// ~5.9 CPU-ms per image on 2 cores (pipeline bench).
	if err := so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
		return fail(fmt.Errorf("ort: disable spinning: %w", err))
	}
	return so, nil
}

// sampleShape checks a float32 value info [batch, d1, ...] and returns [d1, ...] and the fixed
// batch size (-1 when dynamic).
func sampleShape(v *onnx.ValueInfoProto) ([]int64, int64, error) {
	if t := onnxpb.ElemType(v); t != onnxpb.Float {
		return nil, 0, fmt.Errorf("ort: tensor %q has type %s, want float32", v.GetName(), onnxpb.DTypeName(t))
	}
	dims, _, ok := onnxpb.Shape(v)
	if !ok || len(dims) < 2 {
		return nil, 0, fmt.Errorf("ort: tensor %q has shape %v, want [batch, ...] with at least 2 axes", v.GetName(), dims)
	}
	for i, d := range dims[1:] {
		if d <= 0 {
			return nil, 0, fmt.Errorf("ort: tensor %q has a dynamic axis %d (shape %v); only the batch axis may be dynamic",
				v.GetName(), i+1, dims)
		}
	}
	return append([]int64(nil), dims[1:]...), dims[0], nil
}

// InputShape returns the per-sample input shape (without the batch axis).
func (s *Session) InputShape() []int64 { return append([]int64(nil), s.inShape...) }

// FixedBatch returns the batch size the model pins, 0 when the batch axis is dynamic.
func (s *Session) FixedBatch() int { return s.fixed }

// OutputShape returns the per-sample output shape (without the batch axis).
func (s *Session) OutputShape() []int64 { return append([]int64(nil), s.outShape...) }

// Run computes the outputs of batch samples: in holds batch*prod(InputShape) float32 values
// (a longer slice is allowed; the rest is ignored), out receives batch*prod(OutputShape) values.
func (s *Session) Run(in []float32, batch int, out []float32) error {
	if batch <= 0 {
		return fmt.Errorf("ort: run: batch size %d, want > 0", batch)
	}
	if s.fixed > 0 && batch != s.fixed {
		return fmt.Errorf("ort: run: batch size %d, but the model pins batch %d", batch, s.fixed)
	}
	if len(in) < batch*s.inSize {
		return fmt.Errorf("ort: run: input has %d values, want %d (%d x %v)", len(in), batch*s.inSize, batch, s.inShape)
	}
	if len(out) < batch*s.outSize {
		return fmt.Errorf("ort: run: output has room for %d values, want %d (%d x %v)", len(out), batch*s.outSize, batch, s.outShape)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return fmt.Errorf("ort: run: session is closed")
	}
	b, err := s.bind(batch)
	if err != nil {
		return err
	}
	copy(b.in.GetData(), in[:batch*s.inSize])
	if err := s.sess.Run([]ortgo.Value{b.in}, []ortgo.Value{b.out}); err != nil {
		return fmt.Errorf("ort: run batch of %d: %w", batch, err)
	}
	copy(out, b.out.GetData())
	return nil
}

// bind returns the cached tensors for a batch size, evicting the least recently used ones.
func (s *Session) bind(batch int) (*binding, error) {
	s.tick++
	if b, ok := s.cache[batch]; ok {
		b.used = s.tick
		return b, nil
	}
	if len(s.cache) >= maxCached {
		oldest := -1
		for k, b := range s.cache {
			if oldest < 0 || b.used < s.cache[oldest].used {
				oldest = k
			}
		}
		s.cache[oldest].destroy()
		delete(s.cache, oldest)
	}
	in, err := ortgo.NewEmptyTensor[float32](ortgo.NewShape(append([]int64{int64(batch)}, s.inShape...)...))
	if err != nil {
		return nil, fmt.Errorf("ort: input tensor for batch %d: %w", batch, err)
	}
	out, err := ortgo.NewEmptyTensor[float32](ortgo.NewShape(append([]int64{int64(batch)}, s.outShape...)...))
	if err != nil {
		in.Destroy()
		return nil, fmt.Errorf("ort: output tensor for batch %d: %w", batch, err)
	}
	b := &binding{in: in, out: out, used: s.tick}
	s.cache[batch] = b
	return b, nil
}

func (b *binding) destroy() {
	b.in.Destroy()
	b.out.Destroy()
}

// Close releases the session and its tensors. It is safe to call more than once.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, b := range s.cache {
		b.destroy()
		delete(s.cache, k)
	}
	if s.sess == nil {
		return nil
	}
	err := s.sess.Destroy()
	s.sess = nil
	if err != nil {
		return fmt.Errorf("ort: close session: %w", err)
	}
	return nil
}

func prod(dims []int64) int64 {
	p := int64(1)
	for _, d := range dims {
		p *= d
	}
	return p
}
