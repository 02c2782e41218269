package graph

import (
	"errors"
	"fmt"
	"strings"
)

func errorf(format string, args ...any) error {
	return fmt.Errorf("backbone/graph: "+format, args...)
}

// NodeError reports a node Decode cannot turn into a trainable op, or a node that failed in
// a run (forward or gradient). It wraps ErrUnsupported for unsupported ops and attributes.
type NodeError struct {
	Node, Op string
	// CutAt, for unsupported nodes, names the first tensor after the node (and after every other
	// unsupported node) that alone carries everything To needs: a later cut point for From. It
	// is "" when there is none before To.
	CutAt string
	Err   error
}

func (e *NodeError) Error() string {
	var b strings.Builder
	if errors.Is(e.Err, ErrUnsupported) {
		if e.Err == ErrUnsupported {
			fmt.Fprintf(&b, "backbone/graph: op %q (node %q) is not supported for training", e.Op, e.Node)
		} else {
			fmt.Fprintf(&b, "backbone/graph: op %q (node %q): %v", e.Op, e.Node, e.Err)
		}
		if e.CutAt != "" {
			fmt.Fprintf(&b, "; cut later, e.g. at %q", e.CutAt)
		} else {
			b.WriteString("; there is no later single-tensor cut point before To: move To too")
		}
		return b.String()
	}
	fmt.Fprintf(&b, "backbone/graph: op %q (node %q): %v", e.Op, e.Node, e.Err)
	return b.String()
}

func (e *NodeError) Unwrap() error { return e.Err }

// ErrUnsupported is wrapped by errors for ops, attributes and element types that Decode cannot
// train through.
var ErrUnsupported = errors.New("not supported for training")

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrUnsupported)
}
