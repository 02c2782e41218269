// Package graph decodes a float ONNX subgraph (e.g. the last blocks of a CNN backbone) into
// gorgonia nodes, so that it can be fine-tuned together with a head in one gorgonia graph and
// one gradient pass.
//
// Decode takes the nodes that compute Options.To from the cut points Options.From (activations
// with a leading batch axis) and the model's initializers and Constant nodes. Float
// initializers read as data (weights, biases, constant operands) become Params when
// Options.Trainable; Clip bounds, Reshape shapes and BatchNormalization running statistics stay
// fixed. BatchNormalization right after a Conv is folded into the Conv at decode time
// (W' = W·s, B' = (B − mean)·s + β, s = γ/sqrt(var + ε)); elsewhere it runs with frozen
// statistics. Graph.AddTo adds the nodes to a gorgonia.ExprGraph, reading given input nodes
// [batch, ...] and returning the output node and the Params' leaves (LoadParams fills them), so
// that gorgonia.Grad through whatever reads the output (the head's loss) reaches the Params.
// Graph.Infer runs the same nodes forward in float32 (features for evaluation and export).
//
// Supported ops (ai.onnx domain, float32): Conv (1-D and 2-D; groups including depthwise with
// any channel multiplier, strides, pads, auto_pad, dilations, bias), Gemm, MatMul (numpy
// broadcasting), Add, Sub, Mul (numpy broadcasting), Relu, Clip (bounds as constant inputs or
// attributes), BatchNormalization (inference), GlobalAveragePool, AveragePool and MaxPool (1-D
// and 2-D, pads, strides, dilations, ceil_mode, auto_pad, count_include_pad), Flatten, Reshape
// (constant shape), Concat, Identity, Dropout (inference: identity), Softmax (opset < 13
// flattens to 2-D at axis, as the spec), LpNormalization (p = 1 or 2; a zero norm gives 0).
// Anything else, or an unsupported attribute (3-D windows, training-mode BatchNormalization or
// Dropout, a computed Reshape shape, a used second output), is refused by Decode with a
// *NodeError wrapping ErrUnsupported that names the op and node and suggests a later cut point:
// the first tensor after the node that alone carries everything To needs. TailCutPoints lists
// the inputs of a MobileNetV2-style model's inverted-residual blocks, the natural cut points.
//
// Gradients follow PyTorch at kinks: Relu passes nothing at exactly 0, Clip passes only
// strictly inside (min, max) (hardtanh/ReLU6), MaxPool sends the gradient to the first maximum
// of each window.
//
// Implementation: gorgonia v0.9.18 has no grouped or depthwise convolution, its 1×1
// convolution is about 6× slower than ours, and it has no Clip and no gradient for global
// average pooling, so every decoded node is a custom gorgonia Op (gorgonia.go: nodeOp, with one
// gradOp per input for gorgonia's symbolic differentiation) running a plain Go kernel (ops*.go)
// over row-major tensors; each Op owns and recycles its buffers. Convolutions and matrix
// products use a packed, blocked matrix product (gemm.go) with an AVX2/FMA assembly
// micro-kernel for float32 on amd64 (portable Go elsewhere, and for the float64 graphs the
// tests use for finite differences): a 1×1 convolution is one product over all batch·H·W
// positions, other convolutions go through im2col, and depthwise convolutions are direct loops
// (float32 ones with stride 1 in C with AVX2 and FMA, internal/simd: 8 outputs of a row per
// instruction over a zero-padded copy of the plane, 3.6x faster than the Go loops on the
// MobileNetV2 tail's 7×7 planes; the forward sums round as the Go loops and onnxruntime do).
// Work is split over GOMAXPROCS goroutines (parallel.go): products by blocks of rows and
// columns, depthwise convolutions by channel, element-wise kernels, bias passes and pooling by
// consecutive ranges of elements, planes or channels. No sum is split, so the results do not
// depend on the number of cores (TestParallelMatchesSerial); small inputs stay on the caller.
package graph
