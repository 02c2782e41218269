// Package graph decodes a float ONNX subgraph (e.g. the last blocks of a CNN backbone) into a
// graph that runs forward and backward in Go, so that it can be fine-tuned together with a
// head on cached activations.
//
// Decode takes the nodes that compute Options.To from the cut points Options.From (activations
// with a leading batch axis) and the model's initializers and Constant nodes. Float
// initializers read as data (weights, biases, constant operands) become Params when
// Options.Trainable; Clip bounds, Reshape shapes and BatchNormalization running statistics stay
// fixed. BatchNormalization right after a Conv is folded into the Conv at decode time
// (W' = W·s, B' = (B − mean)·s + β, s = γ/sqrt(var + ε)); elsewhere it runs with frozen
// statistics. Graph.Forward maps float32 inputs [batch, ...] to the output; Graph.Backward takes
// dLoss/dOutput (e.g. what the head returns for its input features) and returns dLoss/dInputs,
// filling Param.Grad. The batch size may change between calls.
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
// Implementation: plain Go kernels per op over row-major tensors with a tape (the forward
// values are kept for Backward); buffers are recycled between steps. Convolutions and matrix
// products use a packed, blocked matrix product (gemm.go) with an AVX2/FMA assembly
// micro-kernel for float32 on amd64 (portable Go elsewhere, and for the float64 engine the
// tests use for finite differences): a 1×1 convolution is one product over all batch·H·W
// positions, other convolutions go through im2col, and depthwise convolutions are direct loops.
// Work is split over GOMAXPROCS goroutines. On 2 cores the MobileNetV2 tail (last block, final
// 1×1 Conv and pooling: 2.3 GMAC forward) at 7×7 and batch 54 takes about 0.25–0.45 s for
// Forward+Backward.
package graph
