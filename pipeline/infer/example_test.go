package infer_test

import (
	"fmt"
	"image"
	"image/color"
	"log"
	"math"
	"os"
	"path/filepath"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/export"
	"github.com/grouploss/pipeline/pipeline/infer"
)

// exportTinyModel writes an embedding model to dir: the 6x6 test CNN of backbone/testdata cut at
// its pooled 4-d features, then a 4->3 Linear head and the L2 normalization export.Write adds,
// with the ImageNet preprocessing at 6x6 in its metadata.
func exportTinyModel(dir string) (string, error) {
	bb, err := backbone.Open(filepath.Join("..", "..", "backbone", "testdata", "tiny_cnn.onnx"), backbone.Options{Threads: 1})
	if err != nil {
		return "", err
	}
	defer bb.Close()
	pre := data.DefaultPreprocess()
	pre.Width, pre.Height = 6, 6
	head := []export.Layer{export.Linear{In: bb.Dim(), Out: 3,
		W: []float32{0.5, -0.2, 0.1, 0.3, -0.4, 0.6, 0.2, -0.1, 0.3, 0.3, -0.5, 0.2},
		B: []float32{0.05, -0.05, 0.1}}}
	path := filepath.Join(dir, "model.onnx")
	meta := export.Metadata{Preprocess: pre.Metadata(), ToolVersion: pipeline.Version, SourceSHA256: bb.Info().SHA256}
	return path, export.Write(path, bb.Cut(), bb.CutInfo(), head, meta)
}

// gradient returns a w x h test image.
func gradient(w, h int, phase uint8) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x*255/w) + phase, uint8(y*255/h) ^ phase, uint8((x + y) * 4), 255})
		}
	}
	return img
}

func ExampleOpenEmbedder() {
	dir, err := os.MkdirTemp("", "embedder-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	model, err := exportTinyModel(dir) // or the model.onnx of a `pipeline run` folder
	if err != nil {
		log.Fatal(err)
	}

	emb, err := infer.OpenEmbedder(model) // preprocessing from the model's metadata
	if err != nil {
		log.Fatal(err)
	}
	defer emb.Close()
	vecs, err := emb.Embed([]image.Image{gradient(32, 24, 0)})
	if err != nil {
		log.Fatal(err)
	}
	var sq float64
	for _, v := range vecs[0] {
		sq += float64(v) * float64(v)
	}
	fmt.Println("dim:", emb.Dim(), "embedding length:", len(vecs[0]))
	fmt.Printf("norm: %.4f\n", math.Sqrt(sq))
	// Output:
	// dim: 3 embedding length: 3
	// norm: 1.0000
}
