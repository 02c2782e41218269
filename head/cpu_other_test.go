//go:build !unix

package head

import "testing"

func reportCPU(*testing.B) func() { return func() {} }
