// Package backbone turns an ONNX ImageNet classifier into a frozen feature extractor.
//
// Inspect describes a model file (inputs, outputs, opsets, metadata and the candidate feature
// tensors: pooled outputs, their flattened forms and the input of the final classifier)
// without running it. Cut builds a new model that stops at one feature tensor and outputs
// float32 "features" [batch, D] with a dynamic batch axis, dequantizing int8 tensors. Open does
// both and creates an onnxruntime session (through the backbone/ort adapter) so that
// Backbone.Features maps NCHW float32 images to features.
//
// CPU and Int8Warning tell whether an int8 model will lose accuracy on this processor.
package backbone

//go:generate go run ./testdata/gen
