//go:build !cgo || !amd64

package train

// adamKernel is adamStepGo where adam.c is not built.
func adamKernel(ws, gs, m, v []float64, k adamConsts) { adamStepGo(ws, gs, m, v, k) }
