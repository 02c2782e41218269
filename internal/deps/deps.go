// Package deps pins the project's chosen dependencies in go.mod while the packages that use them
// are being written. It is removed once every dependency has a real user.
package deps

import (
	_ "github.com/advancedclimatesystems/gonnx/onnx"
	_ "github.com/yalue/onnxruntime_go"
	_ "golang.org/x/image/draw"
	_ "gonum.org/v1/gonum/mat"
	_ "gopkg.in/yaml.v3"
	_ "gorgonia.org/gorgonia"
)
