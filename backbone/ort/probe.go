package ort

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/grouploss/pipeline/internal/onnxpb"
	ortgo "github.com/yalue/onnxruntime_go"
)

// Probe runs a model with one float32 input [batch, ...] and returns several intermediate float32
// tensors of any shape, e.g. the activations that quantization calibrates. The tensors are made
// graph outputs of a copy of the model.
type Probe struct {
	sess    *ortgo.DynamicAdvancedSession
	inName  string
	inShape []int64
	outs    []string
}

// NewProbe prepares a probe of the named tensors of a serialized model.
func NewProbe(model []byte, tensors []string, opts Options) (*Probe, error) {
	m, err := parseModel(model, "probe model")
	if err != nil {
		return nil, err
	}
	if len(tensors) == 0 {
		return nil, fmt.Errorf("ort: probe: no tensors to probe")
	}
	ins := onnxpb.RealInputs(m.GetGraph())
	if len(ins) != 1 {
		return nil, fmt.Errorf("ort: probe: model has %d inputs, want 1", len(ins))
	}
	shape, _, err := sampleShape(ins[0])
	if err != nil {
		return nil, err
	}
	g := m.Graph
	g.Output = g.Output[:0]
	for _, t := range tensors {
		g.Output = append(g.Output, onnxpb.ValueInfoNoShape(t, onnxpb.Float))
	}
	data, err := onnxpb.Marshal(m)
	if err != nil {
		return nil, err
	}
	so, err := sessionOptions(opts)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	sess, err := ortgo.NewDynamicAdvancedSessionWithONNXData(data, []string{ins[0].GetName()}, tensors, so)
	if err != nil {
		return nil, fmt.Errorf("ort: probe session: %w", err)
	}
	return &Probe{sess: sess, inName: ins[0].GetName(), inShape: shape, outs: append([]string(nil), tensors...)}, nil
}

// Run computes the probed tensors for batch samples; out[i] holds tensor i's values.
func (p *Probe) Run(in []float32, batch int) ([][]float32, error) {
	n := int(prod(p.inShape))
	if batch <= 0 || len(in) < batch*n {
		return nil, fmt.Errorf("ort: probe: %d input values for batch %d, want %d", len(in), batch, batch*n)
	}
	x, err := ortgo.NewTensor(ortgo.NewShape(append([]int64{int64(batch)}, p.inShape...)...), in[:batch*n])
	if err != nil {
		return nil, fmt.Errorf("ort: probe input: %w", err)
	}
	defer x.Destroy()
	outs := make([]ortgo.Value, len(p.outs))
	defer func() {
		for _, v := range outs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	if err := p.sess.Run([]ortgo.Value{x}, outs); err != nil {
		return nil, fmt.Errorf("ort: probe run: %w", err)
	}
	res := make([][]float32, len(outs))
	for i, v := range outs {
		t, ok := v.(*ortgo.Tensor[float32])
		if !ok {
			return nil, fmt.Errorf("ort: probe: tensor %q is not float32", p.outs[i])
		}
		res[i] = append([]float32(nil), t.GetData()...)
	}
	return res, nil
}

// Close releases the probe's session.
func (p *Probe) Close() error {
	if p.sess == nil {
		return nil
	}
	err := p.sess.Destroy()
	p.sess = nil
	return err
}

// OptimizedOps returns how many nodes of each op type onnxruntime runs for a serialized model
// after its graph optimizations (its optimized graph written to a temporary file and read
// back): e.g. whether QuantizeLinear/DequantizeLinear pairs were fused into QLinearConv.
func OptimizedOps(model []byte, opts Options) (map[string]int, error) {
	dir, err := os.MkdirTemp("", "ort-optimized-")
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	defer os.RemoveAll(dir)
	m, err := onnxpb.Unmarshal(model, "model")
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	ins, outs := onnxpb.RealInputs(m.GetGraph()), m.GetGraph().GetOutput()
	so, err := sessionOptions(opts)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	path := filepath.Join(dir, "optimized.onnx")
	if err := so.SetOptimizedModelFilePath(path); err != nil {
		return nil, fmt.Errorf("ort: optimized model path: %w", err)
	}
	inNames := make([]string, len(ins))
	for i, in := range ins {
		inNames[i] = in.GetName()
	}
	outNames := make([]string, len(outs))
	for i, o := range outs {
		outNames[i] = o.GetName()
	}
	sess, err := ortgo.NewDynamicAdvancedSessionWithONNXData(model, inNames, outNames, so)
	if err != nil {
		return nil, fmt.Errorf("ort: create session: %w", err)
	}
	sess.Destroy()
	opt, err := onnxpb.Load(path)
	if err != nil {
		return nil, fmt.Errorf("ort: reading the optimized model: %w", err)
	}
	ops := map[string]int{}
	for _, n := range opt.GetGraph().GetNode() {
		ops[n.GetOpType()]++
	}
	return ops, nil
}
