package main

import (
	"fmt"
	"image"
	"image/jpeg"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/image/draw"

	"github.com/grouploss/pipeline/internal/fashionmnist"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
)

// TestRunDataShapes runs `pipeline run --data FOLDER` (2 epochs) on image folders of
// the shapes a user's first run may have (real images: CUB-100 JPEGs, Fashion-MNIST PNGs). Each
// either finishes (exit 0, model.onnx saying which embedding it holds, the adaptations in
// metrics.json and config.yaml) or stops before extraction with exit 2 and an error naming the
// setting to change.
func TestRunDataShapes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end runs on real images (-short)")
	}
	model := badSharedModel(t)
	needORT(t)
	cub := cubClasses(t)
	dir := t.TempDir()
	cases := []struct {
		name  string
		data  func(dst string) // writes the image folder
		args  []string         // besides --data, --out, --cache, --backbone
		code  int
		want  []string // in stderr
		adapt []string // adapted keys in metrics.json
	}{
		{"3 classes x 5 images", func(dst string) { cubFolder(t, dst, cub, []int{5, 5, 5}, 0) }, nil, 0,
			[]string{"train_classes 0 (half: 1) -> 2", "no validation classes"},
			[]string{"train_classes", "validation_classes", "head.embedding_dim", "sampler.classes_per_batch", "sampler.samples_per_class", "head.center"}},
		{"12 classes x 10 images", func(dst string) { cubFolder(t, dst, cub, sameCounts(12, 10), 0) }, nil, 0,
			[]string{"validation_classes 10 -> 2", "head.embedding_dim 512 -> 40", "validation MAP@R"},
			[]string{"validation_classes", "head.embedding_dim", "sampler.classes_per_batch", "head.center"}},
		{"very unequal classes", func(dst string) { cubFolder(t, dst, cub, []int{30, 3, 12, 2, 8, 5}, 0) }, nil, 0,
			[]string{"sampler.samples_per_class 9 -> 3"},
			[]string{"validation_classes", "head.embedding_dim", "sampler.classes_per_batch", "sampler.samples_per_class", "head.center"}},
		{"a training class of 1 image", func(dst string) { cubFolder(t, dst, cub, []int{1, 6, 6, 6, 6, 6, 6, 6, 6, 6}, 0) }, nil, 0,
			[]string{"has 1 image: left out of training"},
			[]string{"validation_classes", "head.embedding_dim", "sampler.classes_per_batch", "sampler.samples_per_class", "head.center"}},
		{"large 1600x1200 JPEGs", func(dst string) { cubFolder(t, dst, cub, []int{3, 3, 3, 3}, 1600) }, nil, 0,
			[]string{"train_classes", "no validation classes"}, nil},
		// 5 training classes hold out 2 for validation: too few to show that training generalizes,
		// so the raw features are exported and the run says why.
		{"grayscale 28x28 PNGs (Fashion-MNIST)", func(dst string) { fashionFolder(t, dst, 6) }, nil, 0,
			[]string{"validation_classes 10 -> 2", "model.onnx embeds the RAW FEATURES", "only 2 validation classes (fewer than 5)", "--keep-trained exports the trained model"}, nil},
		{"explicit validation classes the data cannot support", func(dst string) { cubFolder(t, dst, cub, sameCounts(12, 10), 0) },
			[]string{"--validation-classes", "5"}, 2, []string{"5 validation classes leave fewer than 2 of the 6 training classes", "--validation-classes 4 or less"}, nil},
		{"explicit embedding size the data cannot support", func(dst string) { cubFolder(t, dst, cub, sameCounts(12, 10), 0) },
			[]string{"--config", badWrite(t, filepath.Join(dir, "emb.yaml"), "head:\n  embedding_dim: 256\n")}, 2,
			[]string{"head.embedding_dim 256 is more than the 40 training images", "set head.embedding_dim to 40 or less"}, nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, out, cache := filepath.Join(dir, fmt.Sprint("data", i)), filepath.Join(dir, fmt.Sprint("run", i)), filepath.Join(dir, fmt.Sprint("cache", i))
			tc.data(data)
			// 2 epochs keep the test short (the epochs' own adaptation is in TestAdaptToData).
			args := append([]string{"--data", data, "--out", out, "--cache", cache, "--backbone", model, "--epochs", "2"}, tc.args...)
			r := badRun(args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstderr:\n%s", r.code, tc.code, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr+r.stdout, w) {
					t.Errorf("output lacks %q\nstdout:\n%s\nstderr:\n%s", w, r.stdout, r.stderr)
				}
			}
			if tc.code != 0 { // stopped before extraction: nothing cached, no run folder
				if _, err := os.Stat(cache); !os.IsNotExist(err) {
					t.Errorf("the cache %s exists: features were extracted before the error", cache)
				}
				if _, err := os.Stat(out); !os.IsNotExist(err) {
					t.Errorf("run folder %s created", out)
				}
				return
			}
			m := checkRunFolderComplete(t, out)
			var got []string
			for _, a := range m["adaptations"].([]any) {
				got = append(got, a.(map[string]any)["key"].(string))
			}
			if tc.adapt != nil {
				sort.Strings(got)
				want := append([]string(nil), tc.adapt...)
				sort.Strings(want)
				if strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("adapted %v, want %v", got, want)
				}
			}
			// What model.onnx embeds is said in metrics.json and in the model.
			exp, _ := m["export"].(map[string]any)
			choice, _ := m["export_choice"].(map[string]any)
			src, _ := exp["embedding_source"].(string)
			if src != "trained" && src != "raw_features" || choice["embedding_source"] != src {
				t.Errorf("export %v, export_choice %v", exp, choice)
			}
			if meta := modelMetadata(t, filepath.Join(out, "model.onnx")); meta["embedding_source"] != src {
				t.Errorf("model.onnx metadata embedding_source %q, metrics.json %q", meta["embedding_source"], src)
			}
			if src == "raw_features" && !strings.Contains(r.stdout, "model.onnx embeds the RAW FEATURES") {
				t.Errorf("the table does not say that the raw features were exported:\n%s", r.stdout)
			}
			// Fewer validation classes than the comparison needs: the raw features, for that reason,
			// said in the table.
			nval, _ := choice["validation_classes"].(float64)
			minVal, _ := choice["min_validation_classes"].(float64)
			reason, _ := choice["reason"].(string)
			msg, _ := choice["message"].(string)
			few := reason == "too_few_validation_classes" || reason == "no_validation_classes"
			if minVal < 2 || (nval < minVal) != few || few && src != "raw_features" || msg == "" || !strings.Contains(r.stdout, msg) {
				t.Errorf("export_choice %v (source %s); the table:\n%s", choice, src, r.stdout)
			}
		})
	}
}

func sameCounts(n, per int) []int {
	c := make([]int, n)
	for i := range c {
		c[i] = per
	}
	return c
}

// cubClasses lists the image files of each CUB-100 class folder, in sorted order.
func cubClasses(t *testing.T) [][]string {
	root := filepath.Join(testenv.CUB100(t), "images")
	dirs, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, d := range dirs {
		files, err := filepath.Glob(filepath.Join(root, d.Name(), "*.jpg"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no images in %s: %v", d.Name(), err)
		}
		out = append(out, files)
	}
	return out
}

// cubFolder writes an image folder dst/<class>/<image> with counts[c] images of CUB-100 class c:
// links to the JPEGs, or with width > 0 the images resized to width x 3/4 width and re-encoded.
func cubFolder(t *testing.T, dst string, cub [][]string, counts []int, width int) {
	t.Helper()
	for c, n := range counts {
		cls := filepath.Join(dst, fmt.Sprintf("class%02d", c))
		if err := os.MkdirAll(cls, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, src := range cub[c][:n] {
			name := filepath.Join(cls, fmt.Sprintf("%02d.jpg", i))
			if width == 0 {
				if err := os.Symlink(src, name); err != nil {
					t.Fatal(err)
				}
				continue
			}
			f, err := os.Open(src)
			if err != nil {
				t.Fatal(err)
			}
			img, err := jpeg.Decode(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			big := image.NewRGBA(image.Rect(0, 0, width, width*3/4))
			draw.BiLinear.Scale(big, big.Bounds(), img, img.Bounds(), draw.Src, nil)
			w, err := os.Create(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := jpeg.Encode(w, big, &jpeg.Options{Quality: 90}); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// fashionFolder writes per Fashion-MNIST images (28x28 grayscale PNGs) of each of the 10 labels,
// or skips the test without Debian's dataset-fashion-mnist (`make test` installs it).
func fashionFolder(t *testing.T, dst string, per int) {
	t.Helper()
	if !fashionmnist.Available(fashionmnist.Dir) {
		t.Skipf("Fashion-MNIST not found in %s: run `make fashion-mnist` (Debian's dataset-fashion-mnist)", fashionmnist.Dir)
	}
	if _, err := fashionmnist.WriteFolder(fashionmnist.Dir, dst, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, per); err != nil {
		t.Fatal(err)
	}
}

// modelMetadata returns the metadata_props of an ONNX model file.
func modelMetadata(t *testing.T, path string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnxpb.Unmarshal(raw, path)
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{}
	for _, p := range m.GetMetadataProps() {
		meta[p.GetKey()] = p.GetValue()
	}
	return meta
}
