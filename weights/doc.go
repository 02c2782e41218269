// Package weights converts quantized ONNX models (QDQ or QLinear* form) into float32 models that
// compute the same function.
//
// The int8 MobileNetV2 backbone gives CPU-dependent features in onnxruntime: without VNNI its u8s8
// kernels saturate 16-bit sums and lose accuracy. DequantizeModel makes a float32 model from it
// (weights dequantized, each op's output clipped to its quantization range) whose features match
// an exact int8 evaluation at cosine ~0.98 on any CPU. Save the result with
// internal/onnxpb.SaveAtomic.
package weights
