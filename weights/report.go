package weights

import (
	"fmt"
	"sort"
	"strings"
)

// Report summarises what DequantizeModel did.
type Report struct {
	// Converted counts the quantized nodes replaced by float ones, by op type
	// (e.g. "QLinearConv": 52).
	Converted map[string]int
	// PassThrough counts the nodes kept unchanged that move quantized values without arithmetic
	// (Reshape, Flatten, MaxPool, ...), by op type; they now move the float values.
	PassThrough map[string]int
	// WeightTensors is the number of constant quantized tensors (weights, biases, constant
	// operands) dequantized into float32 initializers; WeightElements their number of elements.
	WeightTensors  int
	WeightElements int
	// Clips is the number of Clip nodes inserted to keep each value in its quantization range.
	Clips int
	// DroppedInitializers is the number of initializers left unused and removed (quantized
	// weights, scales, zero points).
	DroppedInitializers int
	// FloatTensors lists, sorted, the tensors that held quantized (uint8/int8) values and now hold
	// their float32 values under the same name, e.g. "464_quantized".
	FloatTensors []string
}

// String returns a one-line summary of r.
func (r *Report) String() string {
	var b strings.Builder
	b.WriteString("converted")
	for _, k := range sortedKeys(r.Converted) {
		fmt.Fprintf(&b, " %s=%d", k, r.Converted[k])
	}
	if len(r.PassThrough) > 0 {
		b.WriteString("; passed through")
		for _, k := range sortedKeys(r.PassThrough) {
			fmt.Fprintf(&b, " %s=%d", k, r.PassThrough[k])
		}
	}
	fmt.Fprintf(&b, "; %d weight tensors (%d values) dequantized; %d clips; %d initializers dropped",
		r.WeightTensors, r.WeightElements, r.Clips, r.DroppedInitializers)
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
