package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/grouploss/pipeline/internal/testmodel"
)

// Helpers of the inspect, doctor, embed and eval tests (prefixed "tool").

// toolTinyCNN is the float32 test CNN: input "pixels" [1,3,6,6], output "logits" [1,3], no
// preprocess metadata.
var toolTinyCNN = filepath.Join("..", "..", "backbone", "testdata", "tiny_cnn.onnx")

// toolModel exports an embedding model into a temporary folder without onnxruntime: the tiny CNN
// cut at its pooled 4-d features, a 4->3 Linear head, L2 normalization, ImageNet preprocessing at
// 6x6 in the metadata (testmodel.Tiny).
func toolModel(t *testing.T) string { return testmodel.Tiny(t) }

// toolDataset writes root/class<c>/<i>.png: per[c] images of class c, 10x8 pixels, each class
// with its own colour and every image with its own noise.
func toolDataset(t *testing.T, per ...int) string {
	t.Helper()
	root := t.TempDir()
	palette := []color.RGBA{{220, 30, 30, 255}, {30, 200, 40, 255}, {20, 40, 230, 255}, {200, 200, 40, 255}}
	for c, n := range per {
		dir := filepath.Join(root, fmt.Sprintf("class%d", c))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			img := image.NewRGBA(image.Rect(0, 0, 10, 8))
			base := palette[c%len(palette)]
			for y := range 8 {
				for x := range 10 {
					j := uint8((x*7 + y*13 + i*29) % 41)
					img.Set(x, y, color.RGBA{base.R - j, base.G + j/2, base.B - j/3, 255})
				}
			}
			var b bytes.Buffer
			if err := png.Encode(&b, img); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d.png", i)), b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

type toolResult struct {
	code           int
	stdout, stderr string
}

// toolRun runs the command line through run(), as main does.
func toolRun(args ...string) toolResult {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return toolResult{code, out.String(), errb.String()}
}
