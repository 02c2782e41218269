package backbone

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// Info describes an ONNX model without running it. See Inspect.
type Info struct {
	Path      string           // file the model was read from
	SHA256    string           // hex SHA-256 of the file
	Size      int64            // file size in bytes
	Producer  string           // producer name and version, e.g. "onnx.quantize 0.1.0"
	IRVersion int64            // ONNX IR version
	Opsets    map[string]int64 // opset version by domain; "" is the default ai.onnx domain
	Metadata  map[string]string
	Inputs    []Tensor // graph inputs that are not initializers
	Outputs   []Tensor
	Nodes     int            // number of nodes in the main graph
	Ops       map[string]int // node count by op type
	Quantized bool           // the graph has int8 ops (QLinear*, *Integer, QuantizeLinear)
	// Features lists the candidate feature tensors in graph order; Auto names the one Cut uses
	// when no feature is given ("" when there is none).
	Features []Candidate
	Auto     string
}

// Tensor describes a graph input or output.
type Tensor struct {
	Name string
	// Shape holds the dims, -1 where the axis is dynamic; DimNames holds the symbolic name of
	// each dynamic axis ("" for fixed axes or unnamed dynamic ones). Shape is nil when unknown.
	Shape    []int64
	DimNames []string
	DType    string // "float32", "uint8", ...
}

// ShapeString formats the shape as "[batch_size,3,224,224]" ("?" for unnamed dynamic axes,
// "unknown" without a shape).
func (t Tensor) ShapeString() string {
	if t.Shape == nil {
		return "unknown"
	}
	parts := make([]string, len(t.Shape))
	for i, d := range t.Shape {
		switch {
		case d >= 0:
			parts[i] = strconv.FormatInt(d, 10)
		case i < len(t.DimNames) && t.DimNames[i] != "":
			parts[i] = t.DimNames[i]
		default:
			parts[i] = "?"
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// Candidate roles.
const (
	RolePooled          = "pooled"           // output of GlobalAveragePool, QLinearGlobalAveragePool or a spatial ReduceMean
	RoleFlattened       = "flattened"        // Flatten/Reshape/Squeeze of a pooled tensor
	RoleClassifierInput = "classifier-input" // input of the final Gemm/MatMul/QLinearMatMul classifier
)

// Candidate is a tensor that can serve as the frozen feature output.
type Candidate struct {
	Tensor string  // tensor name
	Op     string  // op type of the producing node
	Node   string  // name of the producing node
	Role   string  // RolePooled, RoleFlattened or RoleClassifierInput
	Shape  []int64 // inferred shape, -1 for the batch and any unknown axis; nil when unknown
	Dim    int     // feature size per sample (product of the non-batch dims), 0 when unknown
	// Quantized tensors are uint8/int8; their real value is (q - ZeroPoint) * Scale, where
	// Scale and ZeroPoint name the tensors holding the quantization parameters.
	Quantized bool
	Scale     string
	ZeroPoint string
	// ClassifierInput is set when the tensor (also) feeds the final classifier.
	ClassifierInput bool
	Auto            bool // the candidate Cut picks by default
}

// Inspect reads the ONNX model at path and describes its inputs, outputs, opsets, metadata
// and candidate feature tensors, without creating an onnxruntime session.
// External data is read from beside the model (see onnxpb.UnmarshalDir).
func Inspect(path string) (*Info, error) {
	data, err := onnxpb.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	m, err := onnxpb.UnmarshalDir(data, path, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	return inspect(m, path, data), nil
}

// InspectBytes is Inspect on a serialized model; name stands for the file in Info.Path and in
// errors. It reads no file: models with external data are refused (onnxpb.ErrExternalData).
func InspectBytes(data []byte, name string) (*Info, error) {
	if int64(len(data)) > onnxpb.MaxModelBytes {
		return nil, fmt.Errorf("backbone: %q is %d bytes, more than the limit of %d: %w", name, len(data), onnxpb.MaxModelBytes, onnxpb.ErrTooLarge)
	}
	m, err := onnxpb.Unmarshal(data, name)
	if err != nil {
		return nil, fmt.Errorf("backbone: %w", err)
	}
	return inspect(m, name, data), nil
}

func inspect(m *onnx.ModelProto, path string, data []byte) *Info {
	sum := sha256.Sum256(data)
	g := m.GetGraph()
	info := &Info{
		Path:      path,
		SHA256:    hex.EncodeToString(sum[:]),
		Size:      int64(len(data)),
		Producer:  strings.TrimSpace(m.GetProducerName() + " " + m.GetProducerVersion()),
		IRVersion: m.GetIrVersion(),
		Opsets:    make(map[string]int64),
		Metadata:  make(map[string]string),
		Nodes:     len(g.GetNode()),
		Ops:       make(map[string]int),
	}
	for _, o := range m.GetOpsetImport() {
		d := o.GetDomain()
		if d == "ai.onnx" {
			d = ""
		}
		info.Opsets[d] = o.GetVersion()
	}
	for _, p := range m.GetMetadataProps() {
		info.Metadata[p.GetKey()] = p.GetValue()
	}
	for _, vi := range onnxpb.RealInputs(g) {
		info.Inputs = append(info.Inputs, tensorOf(vi))
	}
	for _, vi := range g.GetOutput() {
		info.Outputs = append(info.Outputs, tensorOf(vi))
	}
	for _, n := range g.GetNode() {
		info.Ops[n.GetOpType()]++
		if isInt8Op(n.GetOpType()) {
			info.Quantized = true
		}
	}
	a := analyze(g)
	info.Features = a.candidates
	info.Auto = a.auto
	return info
}

func tensorOf(vi *onnx.ValueInfoProto) Tensor {
	t := Tensor{Name: vi.GetName(), DType: onnxpb.DTypeName(onnxpb.ElemType(vi))}
	if onnxpb.ElemType(vi) == 0 {
		t.DType = "unknown"
	}
	if d, p, ok := onnxpb.Shape(vi); ok {
		t.Shape, t.DimNames = d, p
	}
	return t
}

func isInt8Op(op string) bool {
	return strings.HasPrefix(op, "QLinear") || strings.Contains(op, "Integer") ||
		op == "QuantizeLinear" || op == "DynamicQuantizeLinear" || op == "DynamicQuantizeMatMul" ||
		op == "QGemm" || op == "QAttention"
}

// analysis holds what Cut and Inspect need to know about a graph.
type analysis struct {
	g          *onnx.GraphProto
	producers  map[string]*onnx.NodeProto
	consumers  map[string][]*onnx.NodeProto
	inits      map[string]*onnx.TensorProto
	shapes     map[string][]int64
	elemTypes  map[string]int32
	candidates []Candidate
	auto       string
}

func analyze(g *onnx.GraphProto) *analysis {
	a := &analysis{
		g:         g,
		producers: onnxpb.Producers(g),
		consumers: onnxpb.Consumers(g),
		inits:     onnxpb.Initializers(g),
		shapes:    inferShapes(g),
		elemTypes: make(map[string]int32),
	}
	for _, list := range [][]*onnx.ValueInfoProto{g.GetInput(), g.GetValueInfo(), g.GetOutput()} {
		for _, vi := range list {
			if t := onnxpb.ElemType(vi); t != 0 {
				a.elemTypes[vi.GetName()] = t
			}
		}
	}
	index := make(map[string]int)
	add := func(tensor string, n *onnx.NodeProto, role string) {
		if _, dup := index[tensor]; dup {
			return
		}
		index[tensor] = len(a.candidates)
		a.candidates = append(a.candidates, a.candidate(tensor, n, role))
	}
	for _, n := range g.GetNode() {
		if len(n.GetOutput()) == 0 || n.GetOutput()[0] == "" {
			continue
		}
		switch n.GetOpType() {
		case "GlobalAveragePool", "QLinearGlobalAveragePool":
			add(n.GetOutput()[0], n, RolePooled)
		case "ReduceMean":
			if a.spatialMean(n) {
				add(n.GetOutput()[0], n, RolePooled)
			}
		case "Flatten", "Reshape", "Squeeze":
			if _, ok := index[input(n, 0)]; ok && input(n, 0) != "" {
				add(n.GetOutput()[0], n, RoleFlattened)
			}
		}
	}
	cls := a.classifier()
	if cls != nil {
		x := cls.GetInput()[0]
		if p := a.producers[x]; p != nil {
			add(x, p, RoleClassifierInput)
			a.candidates[index[x]].ClassifierInput = true
		}
		// The penultimate pooled features: walk back from the classifier input through
		// reshapes to a pooled tensor, else take the classifier input itself.
		a.auto = x
		for t, steps := x, 0; steps < 8; steps++ {
			if i, ok := index[t]; ok && a.candidates[i].Role == RolePooled {
				a.auto = t
				break
			}
			p := a.producers[t]
			if p == nil || !isReshape(p.GetOpType()) || input(p, 0) == "" {
				break
			}
			t = input(p, 0)
		}
		if a.producers[a.auto] == nil {
			a.auto = ""
		}
	}
	if a.auto == "" {
		for i := len(a.candidates) - 1; i >= 0; i-- {
			if a.candidates[i].Role == RolePooled {
				a.auto = a.candidates[i].Tensor
				break
			}
		}
	}
	if i, ok := index[a.auto]; ok {
		a.candidates[i].Auto = true
	}
	return a
}

// input returns the i-th input of n, or "" when n has fewer inputs (hostile or optional).
func input(n *onnx.NodeProto, i int) string {
	if i < len(n.GetInput()) {
		return n.GetInput()[i]
	}
	return ""
}

func isReshape(op string) bool {
	return op == "Flatten" || op == "Reshape" || op == "Squeeze"
}

// spatialMean reports whether a ReduceMean node averages over every axis after the channel
// axis of an NCHW-like tensor.
func (a *analysis) spatialMean(n *onnx.NodeProto) bool {
	axes, ok := reduceAxes(n, func(name string) ([]int64, bool) {
		t, ok := a.inits[name]
		if !ok {
			return nil, false
		}
		v, err := onnxpb.Int64s(t)
		return v, err == nil
	})
	if !ok || len(axes) == 0 {
		return false
	}
	rank := 4
	if x := a.shapes[input(n, 0)]; x != nil {
		rank = len(x)
	}
	if rank < 3 || len(axes) != rank-2 {
		return false
	}
	set := normAxes(axes, rank)
	for i := 2; i < rank; i++ {
		if !set[i] {
			return false
		}
	}
	return true
}

// classifier finds the final classifier (Gemm, MatMul, QLinearMatMul, MatMulInteger) by walking
// back from the first graph output through softmax, bias adds, (de)quantization and reshapes.
func (a *analysis) classifier() *onnx.NodeProto {
	if len(a.g.GetOutput()) == 0 {
		return nil
	}
	t := a.g.GetOutput()[0].GetName()
	for steps := 0; steps < 12; steps++ {
		n := a.producers[t]
		if n == nil || len(n.GetInput()) == 0 {
			return nil
		}
		switch n.GetOpType() {
		case "Gemm", "MatMul", "QLinearMatMul", "MatMulInteger":
			return n
		case "Add", "QLinearAdd":
			// Follow the operand that is computed, not the constant bias.
			operands := []int{0, 1}
			if n.GetOpType() == "QLinearAdd" {
				operands = []int{0, 3}
			}
			next := ""
			for _, i := range operands {
				if i >= len(n.GetInput()) {
					continue
				}
				if _, isInit := a.inits[n.GetInput()[i]]; !isInit && a.producers[n.GetInput()[i]] != nil {
					next = n.GetInput()[i]
					break
				}
			}
			if next == "" {
				return nil
			}
			t = next
		case "Softmax", "LogSoftmax", "Sigmoid", "DequantizeLinear", "QuantizeLinear", "Identity",
			"Flatten", "Reshape", "Squeeze", "Cast", "Dropout", "QLinearSoftmax":
			t = n.GetInput()[0]
		default:
			return nil
		}
	}
	return nil
}

// candidate describes tensor as produced by node n.
func (a *analysis) candidate(tensor string, n *onnx.NodeProto, role string) Candidate {
	c := Candidate{Tensor: tensor, Op: n.GetOpType(), Node: n.GetName(), Role: role}
	c.Shape = a.shapes[tensor]
	if role == RoleClassifierInput && c.Shape == nil {
		c.Shape = a.classifierInputShape(tensor)
	}
	if len(c.Shape) >= 2 {
		if d := prod(c.Shape[1:]); d > 0 {
			c.Dim = int(d)
		}
	}
	c.Scale, c.ZeroPoint, c.Quantized = a.quantParams(tensor)
	if !c.Quantized {
		if t := a.elemTypes[tensor]; t == onnxpb.Uint8 || t == onnxpb.Int8 {
			c.Quantized = true
		}
	}
	return c
}

// classifierInputShape deduces [batch, K] for a classifier input from the classifier weights.
func (a *analysis) classifierInputShape(tensor string) []int64 {
	for _, n := range a.consumers[tensor] {
		if len(n.GetInput()) == 0 || n.GetInput()[0] != tensor {
			continue
		}
		var w []int64
		switch n.GetOpType() {
		case "Gemm":
			w = a.shapes[input(n, 1)]
			if len(w) == 2 && onnxpb.AttrIntOr(n, "transB", 0) == 1 {
				w = []int64{w[1], w[0]}
			}
		case "MatMul", "MatMulInteger":
			w = a.shapes[input(n, 1)]
		case "QLinearMatMul":
			if len(n.GetInput()) > 3 {
				w = a.shapes[n.GetInput()[3]]
			}
		}
		if len(w) == 2 && w[0] > 0 {
			return []int64{-1, w[0]}
		}
	}
	return nil
}

// quantParams returns the scale and zero-point tensor names of a quantized tensor, looking at
// its producer (QLinear* ops, QuantizeLinear, reshapes of quantized tensors) and, failing
// that, at a DequantizeLinear consumer.
func (a *analysis) quantParams(tensor string) (scale, zeroPoint string, ok bool) {
	orig := tensor
walk:
	for steps := 0; steps < 8; steps++ {
		n := a.producers[tensor]
		if n == nil {
			break walk
		}
		in := n.GetInput()
		pick := func(i, j int) (string, string, bool) {
			if j < len(in) {
				return in[i], in[j], true
			}
			if i < len(in) {
				return in[i], "", true
			}
			return "", "", false
		}
		switch n.GetOpType() {
		case "QuantizeLinear":
			return pick(1, 2)
		case "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul":
			return pick(6, 7)
		case "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearLeakyRelu", "QLinearSigmoid":
			return pick(3, 4)
		case "QLinearConcat":
			return pick(0, 1)
		case "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "MaxPool":
			if t := a.elemTypes[tensor]; t == onnxpb.Float || len(in) == 0 {
				return "", "", false
			}
			tensor = in[0]
			continue
		}
		break walk
	}
	for _, c := range a.consumers[orig] {
		if c.GetOpType() == "DequantizeLinear" && len(c.GetInput()) >= 2 && c.GetInput()[0] == orig {
			zp := ""
			if len(c.GetInput()) > 2 {
				zp = c.GetInput()[2]
			}
			return c.GetInput()[1], zp, true
		}
	}
	return "", "", false
}

// candidateNames lists candidates for error messages: `"a" (auto), "b"`.
func candidateNames(cs []Candidate) string {
	if len(cs) == 0 {
		return "none found"
	}
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = strconv.Quote(c.Tensor)
		if c.Auto {
			parts[i] += " (auto)"
		}
	}
	return strings.Join(parts, ", ")
}
