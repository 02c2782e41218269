//go:build !amd64

package graph

var useAsm, useAVX512 = false, false

func sgemmKernel6x16(k int, ap, bp, acc *float32) {
	panic("graph: no assembly kernel on this architecture")
}

func sgemmKernel6x16Add(k int, ap, bp, c *float32, ldc int) {
	panic("graph: no assembly kernel on this architecture")
}

func packPanel16(dst, src *float32, ro *int, kb, off int) {
	panic("graph: no assembly kernel on this architecture")
}

func sgemmKernel12x16AddZ(k int, ap0, ap1, bp, c *float32, ldc int) {
	panic("graph: no assembly kernel on this architecture")
}
