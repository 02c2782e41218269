package graph

// The ops Decode supports; everything else is refused with a suggestion of a later cut.
var supportedOps = map[string]bool{
	"Conv": true, "Gemm": true, "MatMul": true, "Add": true, "Sub": true, "Mul": true,
	"Relu": true, "Clip": true, "BatchNormalization": true, "GlobalAveragePool": true,
	"AveragePool": true, "MaxPool": true, "Flatten": true, "Reshape": true, "Concat": true,
	"Identity": true, "Dropout": true, "Softmax": true, "LpNormalization": true,
}

// arity gives the minimum and maximum input counts per op (-1: no maximum); the first min
// inputs are required (not "").
var arity = map[string][2]int{
	"Conv": {2, 3}, "Gemm": {2, 3}, "MatMul": {2, 2}, "Add": {2, 2}, "Sub": {2, 2}, "Mul": {2, 2},
	"Relu": {1, 1}, "Clip": {1, 3}, "BatchNormalization": {5, 5}, "GlobalAveragePool": {1, 1},
	"AveragePool": {1, 1}, "MaxPool": {1, 1}, "Flatten": {1, 1}, "Reshape": {1, 2}, "Concat": {1, -1},
	"Identity": {1, 1}, "Dropout": {1, 3}, "Softmax": {1, 1}, "LpNormalization": {1, 1},
}

// dataSlots lists, per op, the inputs whose float initializers become parameters when
// Trainable (other constant inputs, such as Clip bounds or BatchNormalization statistics,
// stay fixed). -1 means every input.
var dataSlots = map[string][]int{
	"Conv": {1, 2}, "Gemm": {0, 1, 2}, "MatMul": {0, 1}, "Add": {0, 1}, "Sub": {0, 1},
	"Mul": {0, 1}, "BatchNormalization": {1, 2}, "Concat": {-1},
}

func isDataSlot(op string, i int) bool {
	for _, s := range dataSlots[op] {
		if s == -1 || s == i {
			return true
		}
	}
	return false
}

// Supports reports whether Decode decodes (and can train) nodes of the default-domain op type
// op. Quantized ops are not among them: weights.DequantizeModel converts them to float first.
func Supports(op string) bool { return supportedOps[op] }
