package pipeline

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
)

// sameSizes returns n counts of size each.
func sameSizes(n, size int) []int {
	c := make([]int, n)
	for i := range c {
		c[i] = size
	}
	return c
}

// TestAdaptToData: the defaults fit to each data shape, with one Adaptation per change, and a
// setting changed by the user that the data cannot support is an error naming it.
func TestAdaptToData(t *testing.T) {
	cases := []struct {
		name     string
		counts   []int
		edit     func(*config.Config)
		want     map[string]string // adapted key -> new value
		warn     string            // a warning containing this
		fit, val int               // classes trained on and held out
		err      string            // an config.ErrInvalid naming this
	}{
		{"CUB-100 shape: nothing changes", sameSizes(100, 59), nil, map[string]string{}, "", 40, 10, ""},
		{"12 classes x 80 (the issue's flowers)", sameSizes(12, 80), nil,
			map[string]string{keyValClasses: "2", keyEmbeddingDim: "320", keyClassesPerBatch: "4", keyCenter: "false"}, "", 4, 2, ""},
		{"12 classes x 10: more epochs", sameSizes(12, 10), nil,
			map[string]string{keyValClasses: "2", keyEmbeddingDim: "40", keyClassesPerBatch: "4", keyEpochs: "50", keyCenter: "false"}, "", 4, 2, ""},
		// 15 training classes: 5 held out (the fewest whose comparison can keep the trained
		// model), 10 still trained on; 14: 20% (3), else fewer than 10 would remain.
		{"30 classes: 5 validation classes", sameSizes(30, 60), nil,
			map[string]string{keyValClasses: "5"}, "", 10, 5, ""},
		{"28 classes: 20% of 14", sameSizes(28, 60), nil,
			map[string]string{keyValClasses: "3"}, "", 11, 3, ""},
		{"3 classes x 5", sameSizes(3, 5), nil,
			map[string]string{keyTrainClasses: "2", keyValClasses: "0", keyEmbeddingDim: "10", keyClassesPerBatch: "2", keySamplesPerClass: "5", keyCenter: "false"},
			"no validation classes", 2, 0, ""},
		{"very unequal classes", []int{50, 3, 20, 2, 10, 10}, nil,
			map[string]string{keyValClasses: "0", keyEmbeddingDim: "73", keyClassesPerBatch: "3", keySamplesPerClass: "3", keyCenter: "false"},
			"no validation classes", 3, 0, ""},
		{"two images a class, the Group Loss: fewer anchors", sameSizes(10, 2), func(c *config.Config) { c.Loss.Name = config.LossGroup },
			map[string]string{keyValClasses: "2", keyEmbeddingDim: "6", keyClassesPerBatch: "3", keySamplesPerClass: "2", keyAnchors: "1", keyEpochs: "100", keyCenter: "false"},
			"", 3, 2, ""},
		{"two images a class, the default loss: no anchors to adapt", sameSizes(10, 2), nil,
			map[string]string{keyValClasses: "2", keyEmbeddingDim: "6", keyClassesPerBatch: "3", keySamplesPerClass: "2", keyEpochs: "100", keyCenter: "false"},
			"", 3, 2, ""},
		{"a training class of 1 image is left out", append([]int{1}, sameSizes(11, 10)...), nil,
			map[string]string{keyValClasses: "2", keyEmbeddingDim: "30", keyClassesPerBatch: "3", keyEpochs: "50", keyCenter: "false"}, `"class0" has 1 image`, 3, 2, ""},
		{"explicit embedding_dim too large", sameSizes(12, 80), func(c *config.Config) { c.Head.EmbeddingDim = 400 }, nil, "", 0, 0,
			"head.embedding_dim 400 is more than the 320 training images"},
		{"explicit validation classes too many", sameSizes(12, 80), func(c *config.Config) { c.ValidationClasses = 5 }, nil, "", 0, 0,
			"5 validation classes leave fewer than 2 of the 6 training classes"},
		{"explicit batch classes too many", sameSizes(12, 80), func(c *config.Config) { c.Sampler.ClassesPerBatch = 5 }, nil, "", 0, 0,
			"sampler.classes_per_batch 5 is more than the 4 classes trained on"},
		{"explicit samples too many", sameSizes(12, 8), func(c *config.Config) { c.Sampler.SamplesPerClass = 10 }, nil, "", 0, 0,
			"sampler.samples_per_class 10 is more than the 8 images"},
		{"explicit epochs are kept", sameSizes(12, 10), func(c *config.Config) { c.Optimizer.Epochs = 3 },
			map[string]string{keyValClasses: "2", keyEmbeddingDim: "40", keyClassesPerBatch: "4", keyCenter: "false"}, "", 4, 2, ""},
		{"head alone: not centered by default", sameSizes(12, 80), func(c *config.Config) { c.Backbone.TrainBlocks, c.Head.Center = 0, false },
			map[string]string{keyValClasses: "2", keyEmbeddingDim: "320", keyClassesPerBatch: "4"}, "", 4, 2, ""},
		{"centering left at its default adapts", sameSizes(12, 80), func(c *config.Config) { c.Head.Center = true },
			map[string]string{keyValClasses: "2", keyEmbeddingDim: "320", keyClassesPerBatch: "4", keyCenter: "false"}, "", 4, 2, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.DefaultConfig()
			if tc.edit != nil {
				tc.edit(&cfg)
			}
			split, notes, warnings, err := adaptToData(&cfg, memDataset(tc.counts...), 1280)
			if tc.err != "" {
				if err == nil || !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.err) || Hint(err) == "" {
					t.Fatalf("err %v (hint %q), want a config error with %q and a hint", err, Hint(err), tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, a := range notes {
				if _, dup := got[a.Key]; dup || a.Why == "" || a.From == a.To {
					t.Errorf("adaptation %+v repeated, unexplained or no change", a)
				}
				got[a.Key] = a.To
			}
			if len(got) != len(tc.want) {
				t.Errorf("adapted %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s adapted to %q, want %q (all: %v)", k, got[k], v, got)
				}
			}
			if len(split.fit) != tc.fit || len(split.val) != tc.val {
				t.Errorf("split %d fit, %d validation classes; want %d, %d", len(split.fit), len(split.val), tc.fit, tc.val)
			}
			if tc.warn != "" && !strings.Contains(strings.Join(warnings, "\n"), tc.warn) {
				t.Errorf("warnings %q lack %q", warnings, tc.warn)
			}
			// The adapted config is valid and holds the adapted values (written as config.yaml).
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if v, ok := got[keyEmbeddingDim]; ok && v != strconv.Itoa(cfg.Head.EmbeddingDim) {
				t.Errorf("config embedding_dim %d, adaptation says %s", cfg.Head.EmbeddingDim, v)
			}
		})
	}
}

// TestAdaptCUB100Unchanged: on the CUB-100 protocol the defaults are what they were chosen for:
// nothing adapts, so the README's CUB-100 numbers hold for the adaptive defaults.
func TestAdaptCUB100Unchanged(t *testing.T) {
	ds, err := data.Load(testenv.CUB100(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultConfig()
	split, notes, warnings, err := adaptToData(&cfg, ds, 1280)
	if err != nil || len(notes) != 0 || len(warnings) != 0 {
		t.Fatalf("adapted %+v, warnings %q, err %v", notes, warnings, err)
	}
	if len(split.fit) != 40 || len(split.val) != 10 || len(split.eval) != 50 {
		t.Fatalf("split %d / %d / %d classes", len(split.fit), len(split.val), len(split.eval))
	}
}
