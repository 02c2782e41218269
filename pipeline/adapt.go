package pipeline

import (
	"fmt"
	"math"

	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
)

// Adapting the defaults to the data. The defaults were chosen on CUB-100 (50 training classes of
// about 60 images, 1280-d features); a user's folder may have 3 classes of 5 images. Before any
// image is read, adaptToData fits the settings left at their defaults (see isSet) to the
// class sizes and the feature size, logs one line per change and records it in the summary; the
// resolved config.yaml holds the adapted values. A setting the user did set and the data cannot
// support is an error naming it.

// Settings adaptToData may change when the user left them at their defaults.
const (
	keyTrainClasses    = "train_classes"
	keyValClasses      = "validation_classes"
	keyEmbeddingDim    = "head.embedding_dim"
	keyClassesPerBatch = "sampler.classes_per_batch"
	keySamplesPerClass = "sampler.samples_per_class"
	keyAnchors         = "loss.anchors_per_class"
	keyEpochs          = "optimizer.epochs"
	keyCenter          = "head.center"
)

// adaptableKeys reads the value of each adaptable setting, to tell a changed value from the default.
var adaptableKeys = map[string]func(c *config.Config) any{
	keyTrainClasses:    func(c *config.Config) any { return c.TrainClasses },
	keyValClasses:      func(c *config.Config) any { return c.ValidationClasses },
	keyEmbeddingDim:    func(c *config.Config) any { return c.Head.EmbeddingDim },
	keyClassesPerBatch: func(c *config.Config) any { return c.Sampler.ClassesPerBatch },
	keySamplesPerClass: func(c *config.Config) any { return c.Sampler.SamplesPerClass },
	keyAnchors:         func(c *config.Config) any { return c.Loss.AnchorsPerClass },
	keyEpochs:          func(c *config.Config) any { return c.Optimizer.Epochs },
	keyCenter:          func(c *config.Config) any { return c.Head.Center },
}

// isSet reports whether the user chose the setting key: a value other than the default's (the
// preset's, with a preset). A setting left at its default adapts to the data.
func isSet(c *config.Config, key string) bool {
	get := adaptableKeys[key]
	def := config.DefaultConfig()
	if c.Preset != "" {
		config.ApplyPreset(&def, c.Preset) // its name was validated with the config
	}
	return get(c) != get(&def)
}

// adapted reports whether the run adapted key of c to the data (see adaptToData).
func adapted(c *config.Config, key string) bool {
	for _, a := range c.Adapted {
		if a.Key == key {
			return true
		}
	}
	return false
}

// minTrainSteps is the fewest training steps a run with validation classes takes (optimizer.epochs
// is raised for tiny sets): the best epoch is selected on the validation classes, so extra epochs
// cost time, not accuracy. CUB-100's default takes about 700 steps.
const minTrainSteps = 100

// minCenterClasses is the fewest classes trained on for which the features are centered on
// their mean (head.center): the mean of a few classes is theirs, not the domain's, and centering
// on it crowds the classes that lie away from them (Fashion-MNIST, 3 classes trained on: the
// evaluated classes lost 11 NMI points with the centered head; CUB-100's 40 gain from it).
const minCenterClasses = 10

// minValidationClasses is the fewest validation classes held out: retrieval among the images of a
// single class is trivially perfect and selects nothing.
const minValidationClasses = 2

// validationFraction of the training classes is held out for model selection by default (10 of
// CUB-100's 50).
const validationFraction = 0.2

// adaptation collects the changes and warnings of adaptSplit and adaptToModel.
type adaptation struct {
	notes    []config.Adaptation
	warnings []string
}

func (a *adaptation) change(key string, from, to any, why string) {
	a.notes = append(a.notes, config.Adaptation{Key: key, From: fmt.Sprint(from), To: fmt.Sprint(to), Why: why})
}

// adaptToData is adaptSplit then adaptToModel for features of dim values.
func adaptToData(cfg *config.Config, ds *data.Dataset, dim int) (classSplit, []config.Adaptation, []string, error) {
	var a adaptation
	split, err := a.adaptSplit(cfg, ds)
	if err == nil {
		err = a.adaptToModel(cfg, ds, split, dim)
	}
	return split, a.notes, a.warnings, err
}

// adaptSplit adapts the class split (train_classes, validation_classes) to the dataset and
// returns it; it needs only the image list, so it runs before the backbone is opened.
func (a *adaptation) adaptSplit(cfg *config.Config, ds *data.Dataset) (classSplit, error) {

	counts := ds.ClassCounts()
	present := len(presentClasses(counts))
	if cfg.TrainClasses == 0 && present/2 < 2 && present >= 3 && !isSet(cfg, keyTrainClasses) {
		a.change(keyTrainClasses, "0 (half: 1)", 2, fmt.Sprintf("the Group Loss trains on at least 2 classes; %d classes, so 1 is evaluated", present))
		cfg.TrainClasses = 2
	}
	trainable := trainableClasses(ds, cfg.TrainClasses)
	var warnings []string
	if !isSet(cfg, keyValClasses) {
		v := int(math.Round(validationFraction * float64(trainable)))
		if v < minValidationClasses {
			v = minValidationClasses
		}
		// Fewer than minCompareClasses validation classes cannot keep the trained model (see
		// decideExport): hold out that many when minCenterClasses still remain to train on.
		if v < minCompareClasses && trainable-minCompareClasses >= minCenterClasses {
			v = minCompareClasses
		}
		if trainable-v < 2 {
			v = 0
			warnings = append(warnings, fmt.Sprintf("%d training classes are too few to hold out %d for model selection and train on 2: no validation classes: all epochs are trained, and the raw features are exported unless --keep-trained",
				trainable, minValidationClasses))
		}
		if v != cfg.ValidationClasses {
			a.change(keyValClasses, cfg.ValidationClasses, v, fmt.Sprintf("%.0f%% of the %d training classes with 2 images or more, at least %d (%d when %d remain to train on, the fewest that can keep the trained model), leaving 2 to train on",
				100*validationFraction, trainable, minValidationClasses, minCompareClasses, minCenterClasses))
			cfg.ValidationClasses = v
		}
	}
	split, err := splitClasses(ds, cfg.TrainClasses, cfg.ValidationClasses, cfg.Seed)
	if err != nil {
		return split, err
	}
	for _, l := range split.dropped {
		warnings = append(warnings, fmt.Sprintf("training class %q has %d image: left out of training (metric learning needs 2 images of a class)", ds.Classes[l], counts[l]))
	}
	if len(split.eval) == 1 {
		warnings = append(warnings, fmt.Sprintf("a single class (%q) is evaluated: retrieval among its own images is trivially perfect; pass --train-classes to evaluate on more", ds.Classes[split.eval[0]]))
	}
	a.warnings = append(a.warnings, warnings...)
	return split, nil
}

// adaptToModel adapts the head, the batch and the epochs to the split and the feature size dim.
// It runs before any extraction.
func (a *adaptation) adaptToModel(cfg *config.Config, ds *data.Dataset, split classSplit, dim int) error {
	counts := ds.ClassCounts()

	// The embedding: the PCA start needs as many training images and feature dimensions.
	nFit := len(split.fitIdx)
	limit, why := dim, fmt.Sprintf("the feature dimension %d", dim)
	if cfg.Head.Init == "pca" && nFit < limit {
		limit, why = nFit, fmt.Sprintf("the %d training images (the PCA start has at most that many components)", nFit)
	}
	if err := a.capAt(cfg, keyEmbeddingDim, &cfg.Head.EmbeddingDim, limit, why); err != nil {
		return err
	}

	if cfg.Head.Center && len(split.fit) < minCenterClasses && !isSet(cfg, keyCenter) {
		a.change(keyCenter, true, false, fmt.Sprintf("%d classes are trained on, fewer than %d: their mean is not the domain's", len(split.fit), minCenterClasses))
		cfg.Head.Center = false
	}

	// The batch: classes x samples per class that the training classes can fill.
	fitClasses, smallest, largest := len(split.fit), math.MaxInt, 0
	for _, l := range split.fit {
		smallest, largest = min(smallest, counts[l]), max(largest, counts[l])
	}
	if err := a.fitBatch(cfg, fitClasses, smallest); err != nil {
		return err
	}

	// Tiny sets: enough steps to move away from the start when the best epoch is selected.
	spc, cpb := cfg.Sampler.SamplesPerClass, cfg.Sampler.ClassesPerBatch
	steps := max(1, (largest+spc-1)/spc*fitClasses/cpb)
	if len(split.val) > 0 && steps*cfg.Optimizer.Epochs < minTrainSteps && !isSet(cfg, keyEpochs) {
		e := (minTrainSteps + steps - 1) / steps
		a.change(keyEpochs, cfg.Optimizer.Epochs, e, fmt.Sprintf("an epoch is %d steps: at least %d steps, the best epoch is selected on the validation classes", steps, minTrainSteps))
		cfg.Optimizer.Epochs = e
	}
	return cfg.Validate()
}

// capAt lowers the setting key, *v, to limit when it is above, saying why (what limits it); a
// value the user set is an error instead.
func (a *adaptation) capAt(cfg *config.Config, key string, v *int, limit int, what string) error {
	if *v <= limit {
		return nil
	}
	if isSet(cfg, key) {
		return withHint(fmt.Errorf("%w: %s %d is more than %s", config.ErrInvalid, key, *v, what),
			fmt.Sprintf("set %s to %d or less in the config, or leave it out to adapt it", key, limit))
	}
	a.change(key, *v, limit, "at most "+what)
	*v = limit
	return nil
}

// fitBatch fits the sampler's classes x samples per class (and the Group Loss's anchors, which
// must stay below the samples) to fitClasses training classes whose smallest has smallest images.
func (a *adaptation) fitBatch(cfg *config.Config, fitClasses, smallest int) error {
	s := &cfg.Sampler
	if err := a.capAt(cfg, keyClassesPerBatch, &s.ClassesPerBatch, fitClasses, fmt.Sprintf("the %d classes trained on", fitClasses)); err != nil {
		return err
	}
	if err := a.capAt(cfg, keySamplesPerClass, &s.SamplesPerClass, smallest, fmt.Sprintf("the %d images of the smallest training class", smallest)); err != nil {
		return err
	}
	group := cfg.Loss.Name == "group" || cfg.Loss.Name == ""
	if anchors := cfg.Loss.AnchorsPerClass; group && anchors >= s.SamplesPerClass {
		if isSet(cfg, keyAnchors) {
			return withHint(fmt.Errorf("%w: loss.anchors_per_class %d is not below the %d samples per class of a batch", config.ErrInvalid, anchors, s.SamplesPerClass),
				fmt.Sprintf("set loss.anchors_per_class to %d or less in the config", s.SamplesPerClass-1))
		}
		a.change(keyAnchors, anchors, s.SamplesPerClass-1, fmt.Sprintf("anchors stay below the %d samples per class of a batch", s.SamplesPerClass))
		cfg.Loss.AnchorsPerClass = s.SamplesPerClass - 1
	}
	return nil
}

// trainableClasses counts the training classes (the first trainClasses present, 0: half) with
// at least 2 images.
func trainableClasses(ds *data.Dataset, trainClasses int) int {
	counts := ds.ClassCounts()
	present := presentClasses(counts)
	if trainClasses == 0 {
		trainClasses = len(present) / 2
	}
	n := 0
	for _, l := range present[:min(trainClasses, len(present))] {
		if counts[l] >= 2 {
			n++
		}
	}
	return n
}

// presentClasses lists the labels that have images, in label order.
func presentClasses(counts []int) []int {
	var present []int
	for l, c := range counts {
		if c > 0 {
			present = append(present, l)
		}
	}
	return present
}
