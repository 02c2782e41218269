package onnxpb

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// MaxTensorElements is the largest element count a model may declare for one tensor: an
// initializer or Constant's dims, or the fixed dims of a graph input, output or value_info.
// Unmarshal refuses larger declarations (ErrTooLarge) before anything is allocated for them.
// 1<<30 elements is 4 GiB of float32, far above any backbone's largest activation.
var MaxTensorElements int64 = 1 << 30

// maxGraphDepth bounds the nesting of subgraphs (If/Loop/Scan bodies) that Unmarshal walks.
const maxGraphDepth = 32

// ErrExternalData is wrapped by errors for tensors whose external data cannot be used: a location
// outside the model's folder (absolute, "..", a symbolic link out), a missing or non-regular
// file, a range outside the file, or external data in a model given as bytes without its folder.
var ErrExternalData = errors.New("unusable external data")

// elements returns the product of dims, refusing negative dims and products above
// MaxTensorElements (which also rules out overflow).
func elements(dims []int64) (int64, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("negative dim %d in %v", d, dims)
		}
		if d != 0 && n > MaxTensorElements/d {
			return 0, fmt.Errorf("dims %v hold more than %d elements (onnxpb.MaxTensorElements): %w", dims, MaxTensorElements, ErrTooLarge)
		}
		n *= d
	}
	if n > MaxTensorElements {
		return 0, fmt.Errorf("dims %v hold %d elements, more than %d (onnxpb.MaxTensorElements): %w", dims, n, MaxTensorElements, ErrTooLarge)
	}
	return n, nil
}

// checkModel checks what Unmarshal promises beyond parsing: every tensor's declared size is
// within MaxTensorElements, no tensor keeps external data, every node input is a graph input,
// an initializer, an outer-scope name (in subgraphs) or the output of a node, no tensor has two
// producers, and the graph has no cycle. Graph outputs must be produced.
func checkModel(m *onnx.ModelProto, name string) error {
	g := m.GetGraph()
	err := visitTensors(g, "", func(t *onnx.TensorProto, where string) error {
		if _, err := elements(t.GetDims()); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if isExternal(t) {
			loc := ExternalLocation(t)
			return fmt.Errorf("%w: %s keeps its data in the external file %q; load the model from its file so that the data can be read from beside it",
				ErrExternalData, where, loc)
		}
		return nil
	})
	if err != nil {
		return wrapInvalid(name, err)
	}
	if err := checkGraph(g, nil, 0); err != nil {
		return wrapInvalid(name, err)
	}
	return nil
}

func wrapInvalid(name string, err error) error {
	if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrExternalData) {
		return fmt.Errorf("onnxpb: %q: %w", name, err)
	}
	return fmt.Errorf("onnxpb: %w: %q: %w", ErrInvalid, name, err)
}

func isExternal(t *onnx.TensorProto) bool {
	return t.GetDataLocation() == onnx.TensorProto_EXTERNAL || len(t.GetExternalData()) > 0
}

// ExternalLocation returns the "location" entry of a tensor's external_data ("" when absent).
func ExternalLocation(t *onnx.TensorProto) string {
	for _, kv := range t.GetExternalData() {
		if kv.GetKey() == "location" {
			return kv.GetValue()
		}
	}
	return ""
}

// visitTensors calls fn for every TensorProto of g and its subgraphs: initializers, sparse
// initializers, and tensor attributes of nodes (Constant values). where names the tensor.
func visitTensors(g *onnx.GraphProto, scope string, fn func(t *onnx.TensorProto, where string) error) error {
	return visitTensorsDepth(g, scope, fn, 0)
}

func visitTensorsDepth(g *onnx.GraphProto, scope string, fn func(*onnx.TensorProto, string) error, depth int) error {
	if depth > maxGraphDepth {
		return fmt.Errorf("subgraphs nested deeper than %d", maxGraphDepth)
	}
	for _, t := range g.GetInitializer() {
		if err := fn(t, fmt.Sprintf("%sinitializer %q", scope, t.GetName())); err != nil {
			return err
		}
	}
	for _, st := range g.GetSparseInitializer() {
		for _, t := range []*onnx.TensorProto{st.GetValues(), st.GetIndices()} {
			if t != nil {
				if err := fn(t, fmt.Sprintf("%ssparse initializer %q", scope, t.GetName())); err != nil {
					return err
				}
			}
		}
	}
	for _, n := range g.GetNode() {
		for _, a := range n.GetAttribute() {
			where := fmt.Sprintf("%sattribute %q of node %q (%s)", scope, a.GetName(), n.GetName(), n.GetOpType())
			ts := append([]*onnx.TensorProto(nil), a.GetTensors()...)
			if a.GetT() != nil {
				ts = append(ts, a.GetT())
			}
			for _, sp := range append([]*onnx.SparseTensorProto{a.GetSparseTensor()}, a.GetSparseTensors()...) {
				if sp != nil {
					ts = append(ts, sp.GetValues(), sp.GetIndices())
				}
			}
			for _, t := range ts {
				if t == nil {
					continue
				}
				if err := fn(t, where); err != nil {
					return err
				}
			}
			for _, sg := range subgraphs(a) {
				inner := fmt.Sprintf("%ssubgraph %q of node %q: ", scope, sg.GetName(), n.GetName())
				if err := visitTensorsDepth(sg, inner, fn, depth+1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func subgraphs(a *onnx.AttributeProto) []*onnx.GraphProto {
	gs := append([]*onnx.GraphProto(nil), a.GetGraphs()...)
	if a.GetG() != nil {
		gs = append(gs, a.GetG())
	}
	return gs
}

// scope is the chain of names visible in a (sub)graph.
type scope struct {
	names map[string]bool
	outer *scope
}

func (s *scope) has(name string) bool {
	for ; s != nil; s = s.outer {
		if s.names[name] {
			return true
		}
	}
	return false
}

// checkGraph checks the value infos and the dataflow of g (see checkModel); outer holds the names
// of the enclosing graphs.
func checkGraph(g *onnx.GraphProto, outer *scope, depth int) error {
	if depth > maxGraphDepth {
		return fmt.Errorf("subgraphs nested deeper than %d", maxGraphDepth)
	}
	where := ""
	if depth > 0 {
		where = fmt.Sprintf("subgraph %q: ", g.GetName())
	}
	for _, list := range [][]*onnx.ValueInfoProto{g.GetInput(), g.GetOutput(), g.GetValueInfo()} {
		for _, vi := range list {
			if err := checkValueInfo(vi); err != nil {
				return fmt.Errorf("%s%w", where, err)
			}
		}
	}
	sc := &scope{names: map[string]bool{}, outer: outer}
	defined := map[string]string{} // name -> what defines it, for duplicate messages
	define := func(name, what string) error {
		if name == "" {
			return nil
		}
		if prev, dup := defined[name]; dup {
			if strings.HasPrefix(prev, "graph input") && strings.HasPrefix(what, "initializer") ||
				strings.HasPrefix(prev, "initializer") && strings.HasPrefix(what, "graph input") {
				return nil // IR < 4 lists initializers among the inputs
			}
			return fmt.Errorf("%stensor %q is defined twice: by %s and by %s", where, name, prev, what)
		}
		defined[name] = what
		return nil
	}
	for _, vi := range g.GetInput() {
		if err := define(vi.GetName(), "graph input"); err != nil {
			return err
		}
	}
	for _, t := range g.GetInitializer() {
		if err := define(t.GetName(), "initializer"); err != nil {
			return err
		}
	}
	for _, st := range g.GetSparseInitializer() {
		if err := define(st.GetValues().GetName(), "initializer"); err != nil {
			return err
		}
	}
	producer := map[string]int{}
	nodes := g.GetNode()
	for i, n := range nodes {
		for _, o := range n.GetOutput() {
			if err := define(o, fmt.Sprintf("node %q (%s)", n.GetName(), n.GetOpType())); err != nil {
				return err
			}
			if o != "" {
				producer[o] = i
			}
		}
	}
	for name := range defined {
		if _, isNode := producer[name]; !isNode {
			sc.names[name] = true
		}
	}
	forward := false
	for i, n := range nodes {
		for _, in := range n.GetInput() {
			if in == "" || sc.has(in) {
				continue
			}
			if j, ok := producer[in]; ok && j >= i {
				forward = true
				continue
			}
			return fmt.Errorf("%snode %q (%s) reads %q, which no node produces and which is not a graph input or initializer (dangling input)",
				where, n.GetName(), n.GetOpType(), in)
		}
		for _, a := range n.GetAttribute() {
			for _, sg := range subgraphs(a) {
				// A subgraph sees everything of the enclosing graph; forward references are
				// caught by the cycle check through nodeInputs.
				all := &scope{names: map[string]bool{}, outer: sc}
				for o := range producer {
					all.names[o] = true
				}
				if err := checkGraph(sg, all, depth+1); err != nil {
					return fmt.Errorf("%snode %q (%s): %w", where, n.GetName(), n.GetOpType(), err)
				}
			}
		}
		for _, o := range n.GetOutput() {
			if o != "" {
				sc.names[o] = true
			}
		}
	}
	for _, vi := range g.GetOutput() {
		if !sc.has(vi.GetName()) {
			return fmt.Errorf("%sgraph output %q is produced by no node and is not an input or initializer", where, vi.GetName())
		}
	}
	if forward {
		if cyc := findCycle(nodes, producer); cyc != "" {
			return fmt.Errorf("%sthe graph has a cycle: %s", where, cyc)
		}
	}
	return nil
}

// nodeInputs returns the names a node reads, including those its subgraphs read from outside.
func nodeInputs(n *onnx.NodeProto, depth int) []string {
	ins := append([]string(nil), n.GetInput()...)
	if depth > maxGraphDepth {
		return ins
	}
	for _, a := range n.GetAttribute() {
		for _, sg := range subgraphs(a) {
			for _, sn := range sg.GetNode() {
				ins = append(ins, nodeInputs(sn, depth+1)...)
			}
		}
	}
	return ins
}

// findCycle returns a description of a cycle among nodes ("node "a" (Add) -> node "b" (Relu) ->
// node "a" (Add)"), or "" when the dataflow is acyclic (possibly not topologically sorted, which
// onnxruntime accepts).
func findCycle(nodes []*onnx.NodeProto, producer map[string]int) string {
	deps := make([][]int, len(nodes))
	indeg := make([]int, len(nodes))
	users := make([][]int, len(nodes))
	for i, n := range nodes {
		seen := map[int]bool{}
		for _, in := range nodeInputs(n, 0) {
			if j, ok := producer[in]; ok && !seen[j] {
				seen[j] = true
				deps[i] = append(deps[i], j)
				users[j] = append(users[j], i)
				indeg[i]++
			}
		}
	}
	var queue []int
	for i, d := range indeg {
		if d == 0 {
			queue = append(queue, i)
		}
	}
	done := 0
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		done++
		for _, u := range users[i] {
			if indeg[u]--; indeg[u] == 0 {
				queue = append(queue, u)
			}
		}
	}
	if done == len(nodes) {
		return ""
	}
	// Walk back from a node left on the cycle until a node repeats.
	start := -1
	for i, d := range indeg {
		if d > 0 {
			start = i
			break
		}
	}
	pos := map[int]int{}
	var path []int
	for cur := start; ; {
		if p, ok := pos[cur]; ok {
			path = path[p:]
			break
		}
		pos[cur] = len(path)
		path = append(path, cur)
		next := -1
		for _, j := range deps[cur] {
			if indeg[j] > 0 {
				next = j
				break
			}
		}
		if next < 0 { // cannot happen: a node left over has a dependency left over
			break
		}
		cur = next
	}
	parts := make([]string, 0, len(path)+1)
	for k := len(path) - 1; k >= 0; k-- { // producers first
		n := nodes[path[k]]
		parts = append(parts, fmt.Sprintf("node %q (%s)", n.GetName(), n.GetOpType()))
	}
	if len(parts) > 0 {
		parts = append(parts, parts[0])
	}
	return strings.Join(parts, " -> ")
}

func checkValueInfo(vi *onnx.ValueInfoProto) error {
	sh := vi.GetType().GetTensorType().GetShape()
	if sh == nil {
		return nil
	}
	n := int64(1)
	for _, d := range sh.GetDim() {
		v, ok := d.GetValue().(*onnx.TensorShapeProto_Dimension_DimValue)
		if !ok {
			continue
		}
		if v.DimValue < 0 {
			return fmt.Errorf("value %q declares the negative dim %d", vi.GetName(), v.DimValue)
		}
		if v.DimValue > 0 && n > MaxTensorElements/v.DimValue {
			return fmt.Errorf("value %q declares a shape of more than %d elements (onnxpb.MaxTensorElements): %w",
				vi.GetName(), MaxTensorElements, ErrTooLarge)
		}
		n *= max(v.DimValue, 1)
	}
	return nil
}

// ResolveExternalData reads the external data of every tensor of m (initializers, Constant
// values, subgraphs) from files in dir and stores it inline as raw_data, so that the model is
// self-contained. A location must be a plain relative path inside dir: absolute paths, ".."
// components and symbolic links that leave dir are refused, as are non-regular files, ranges
// outside the file, data sizes that do not match the tensor's dims, and totals that would make
// the model larger than MaxModelBytes (inlined counts with have bytes already read). Errors wrap
// ErrExternalData (or ErrTooLarge) and name the tensor and the location.
func ResolveExternalData(m *onnx.ModelProto, dir string, have int64) error {
	var root *os.Root
	defer func() {
		if root != nil {
			root.Close()
		}
	}()
	total := have
	return visitTensors(m.GetGraph(), "", func(t *onnx.TensorProto, where string) error {
		if !isExternal(t) {
			return nil
		}
		loc, offset, length, err := externalRef(t)
		if err != nil {
			return fmt.Errorf("onnxpb: %w: %s: %v", ErrExternalData, where, err)
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("onnxpb: %w: %s: location %q: %s", ErrExternalData, where, loc, fmt.Sprintf(format, args...))
		}
		if !filepath.IsLocal(loc) {
			return fail("must be a relative path inside the model's folder %q (no absolute path, no \"..\")", dir)
		}
		if root == nil {
			if root, err = os.OpenRoot(dir); err != nil {
				return fail("%v", err)
			}
		}
		// Stat before opening: opening a FIFO would block.
		if st, err := root.Stat(loc); err != nil {
			return fail("%v (symbolic links must stay inside the model's folder)", err)
		} else if !st.Mode().IsRegular() {
			return fail("is not a regular file")
		}
		f, err := root.Open(loc)
		if err != nil {
			return fail("%v (symbolic links must stay inside the model's folder)", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return fail("%v", err)
		}
		if !st.Mode().IsRegular() {
			return fail("is not a regular file")
		}
		if offset > st.Size() {
			return fail("offset %d is past the end of the %d-byte file", offset, st.Size())
		}
		if length < 0 {
			length = st.Size() - offset
		}
		if length > st.Size()-offset {
			return fail("offset %d + length %d is past the end of the %d-byte file", offset, length, st.Size())
		}
		if n, err := elements(t.GetDims()); err == nil {
			if size := elemSize(onnx.TensorProto_DataType(t.GetDataType())); size > 0 && int64(size)*n != length {
				return fail("holds %d bytes, want %d (%d elements of %s)", length, int64(size)*n, n, DTypeName(t.GetDataType()))
			}
		}
		if total += length; total > MaxModelBytes {
			return fmt.Errorf("onnxpb: %s: external data makes the model larger than the limit of %d bytes: %w", where, MaxModelBytes, ErrTooLarge)
		}
		buf := make([]byte, length)
		if _, err := io.ReadFull(io.NewSectionReader(f, offset, length), buf); err != nil {
			return fail("%v", err)
		}
		t.RawData, t.ExternalData, t.DataLocation = buf, nil, onnx.TensorProto_DEFAULT
		return nil
	})
}

// externalRef parses a tensor's external_data entries; length is -1 when absent (to the end).
func externalRef(t *onnx.TensorProto) (loc string, offset, length int64, err error) {
	length = -1
	for _, kv := range t.GetExternalData() {
		switch kv.GetKey() {
		case "location":
			loc = kv.GetValue()
		case "offset", "length":
			v, perr := strconv.ParseInt(kv.GetValue(), 10, 64)
			if perr != nil || v < 0 {
				return "", 0, 0, fmt.Errorf("external_data %s %q is not a non-negative integer", kv.GetKey(), kv.GetValue())
			}
			if kv.GetKey() == "offset" {
				offset = v
			} else {
				length = v
			}
		}
	}
	if loc == "" {
		return "", 0, 0, fmt.Errorf("external_data has no location")
	}
	if strings.ContainsRune(loc, 0) {
		return "", 0, 0, fmt.Errorf("external_data location %q holds a NUL byte", loc)
	}
	return loc, offset, length, nil
}
