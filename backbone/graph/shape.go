package graph

import "fmt"

// outShape returns the output shape of kernel k for inputs of the given shapes (nil for an
// absent optional input), with the checks its forward makes; the kernels' shape logic runs on
// tensors without data.
func outShape[T float](k kernel[T], in [][]int) ([]int, error) {
	ts := make([]*tensor[T], len(in))
	for i, s := range in {
		if s != nil {
			ts[i] = &tensor[T]{shape: s}
		}
	}
	x := in[0]
	switch k := k.(type) {
	case *binaryK[T]:
		return broadcastShapes(in[0], in[1])
	case reluK[T], *clipK[T], identityK[T]:
		return x, nil
	case *softmaxK[T]:
		_, _, _, err := axisLayout(x, k.axis, k.legacy)
		return x, err
	case *lpNormK[T]:
		_, _, _, err := axisLayout(x, k.axis, false)
		return x, err
	case *bnK[T]:
		if len(x) < 2 {
			return nil, fmt.Errorf("input %s has no channel axis", shapeString(x))
		}
		if c := x[1]; c != len(k.mean) || numel(in[1]) != c || numel(in[2]) != c {
			return nil, fmt.Errorf("input %s has %d channels; scale, bias, mean and var must have as many values (%d, %d, %d)", shapeString(x), c, numel(in[1]), numel(in[2]), len(k.mean))
		}
		return x, nil
	case *reshapeK[T]:
		return k.outShape(x)
	case *concatK[T]:
		return k.shape(ts)
	case *convK[T]:
		g, n, _, m, _, _, err := k.geometry(ts)
		if err != nil {
			return nil, err
		}
		return g.outShape(n, m, len(x)-2), nil
	case *poolK[T]:
		if len(x) < 3 {
			return nil, fmt.Errorf("input %s must be [N, C, spatial...]", shapeString(x))
		}
		g, err := k.resolve(x[2:], k.kernel)
		if err != nil {
			return nil, err
		}
		return g.outShape(x[0], x[1], len(x)-2), nil
	case gapK[T]:
		if len(x) < 3 {
			return nil, fmt.Errorf("input %s must be [N, C, spatial...]", shapeString(x))
		}
		s := append([]int(nil), x...)
		for i := 2; i < len(s); i++ {
			s[i] = 1
		}
		return s, nil
	case *gemmK[T]:
		return k.shape(ts)
	case matmulK[T]:
		g, err := mmGeometry(in[0], in[1])
		if err != nil {
			return nil, err
		}
		return g.outShape, nil
	}
	return nil, fmt.Errorf("no shape rule for %T", k)
}
