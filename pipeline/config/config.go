package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/internal/hint"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/metrics"
)

// ErrInvalid marks an invalid configuration: a file that does not parse, a value Validate
// refuses, a setting the data or the machine cannot support (exit code 2).
var ErrInvalid = errors.New("config: invalid")

// Config is every knob of `pipeline run`. The zero value is not useful: start from DefaultConfig.
// It is read from YAML (unknown keys are errors) and written, resolved, into the run folder. The
// loss, optimizer, learning-rate schedule, sampler and head initializations are written as
// components {name, args} (see configform.go).
type Config struct {
	// Data is an image folder (root/<class>/<image>), a CSV manifest (path,label[,split]) or a
	// folder holding manifest.csv.
	Data string `yaml:"data" json:"data"`
	// TrainClasses is the number of classes (in sorted label order) trained on; the rest are
	// evaluated. 0 means half of the classes, rounded down.
	TrainClasses int `yaml:"train_classes" json:"train_classes"`
	// ValidationClasses are carved out of the training classes for model selection.
	ValidationClasses int    `yaml:"validation_classes" json:"validation_classes"`
	Out               string `yaml:"out" json:"out"`
	Cache             string `yaml:"cache" json:"cache"`
	Seed              int64  `yaml:"seed" json:"seed"`
	Threads           int    `yaml:"threads" json:"threads"`
	// OnnxRuntime is the path of libonnxruntime.so; empty means $ONNXRUNTIME_SHARED_LIBRARY_PATH,
	// then .deps/onnxruntime.
	OnnxRuntime string `yaml:"onnxruntime" json:"onnxruntime"`
	// OnBadImage is what an image that does not decode does: "fail" stops the run before training
	// with an error naming the file; "skip" leaves it out, lists it in skipped_images.txt in the
	// run folder and counts it in metrics.json.
	OnBadImage BadImagePolicy `yaml:"on_bad_image" json:"on_bad_image"`
	// Force lets Run reuse a non-empty run folder (the --force flag; not a config-file key). The
	// new run is built beside it and replaces it only when it succeeds.
	Force bool `yaml:"-" json:"-"`
	// Preset, when set (cub, cars196 or sop), starts the config from the Group Loss reference
	// code's hyperparameters for that benchmark; the file's other keys and the flags override it
	// (see ApplyPreset).
	Preset string `yaml:"preset" json:"preset"`
	// Ensemble trains this many heads on the same features, with the seeds seed, seed+1, ...; the
	// embedding is the concatenation of their L2-normalized embeddings (normalized again), in
	// evaluation and in the one exported model. 0 or 1: a single head.
	Ensemble int `yaml:"ensemble" json:"ensemble"`
	// KeepTrained exports the trained model even when the validation classes do not show that it
	// beats the raw features (by default the raw features are exported then; see decideExport).
	KeepTrained bool `yaml:"keep_trained" json:"keep_trained"`
	// Adapted is written by the run into its config.yaml: the defaults it adapted to the data
	// (pipeline's adapt.go), kept so that a resumed run reports them too. A config file need not set it.
	Adapted []Adaptation `yaml:"adapted" json:"adapted"`

	Backbone   BackboneConfig   `yaml:"backbone" json:"backbone"`
	Preprocess PreprocessConfig `yaml:"preprocess" json:"preprocess"`
	Head       HeadConfig       `yaml:"head" json:"head"`
	Loss       LossConfig       `yaml:"loss" json:"loss"`
	Sampler    SamplerConfig    `yaml:"sampler" json:"sampler"`
	Optimizer  OptimizerConfig  `yaml:"optimizer" json:"optimizer"`
	Eval       EvalConfig       `yaml:"eval" json:"eval"`
	Export     ExportConfig     `yaml:"export" json:"export"`
}

// Adaptation is one default changed to fit the data (metrics.json "adaptations").
type Adaptation struct {
	Key  string `yaml:"key" json:"key"`
	From string `yaml:"from" json:"from"`
	To   string `yaml:"to" json:"to"`
	Why  string `yaml:"why" json:"why"`
}

// BackboneConfig selects the ONNX backbone and where it is cut.
type BackboneConfig struct {
	Path string `yaml:"path" json:"path"`
	// Feature is the tensor to cut at; empty means the penultimate pooled features.
	Feature   string `yaml:"feature" json:"feature"`
	BatchSize int    `yaml:"batch_size" json:"batch_size"`
	// Dequantize says when a quantized (int8) backbone runs as its float conversion for the
	// frozen features: auto on x86 CPUs without VNNI (whose int8 kernels lose about 6 R@1 on the
	// shared MobileNetV2), always, or never.
	Dequantize Dequantize `yaml:"dequantize" json:"dequantize"`
	// Flip also extracts the features of each training image's horizontal mirror, used as
	// augmentation when training the head.
	Flip bool `yaml:"flip" json:"flip"`
	// FlipTTA embeds every image as the head applied to the mean of the features of the image and
	// of its mirror, in evaluation and in the exported model (whose backbone then runs twice).
	FlipTTA bool `yaml:"flip_tta" json:"flip_tta"`
	// TrainBlocks > 0 fine-tunes the last K inverted-residual blocks of the backbone (and what
	// follows them up to the feature tensor) together with the head, on cached activations of the
	// float (dequantized) model; 0 trains the head only on frozen features.
	TrainBlocks int `yaml:"train_blocks" json:"train_blocks"`
	// TrainableFrom, instead of TrainBlocks, names the tensor (or node) where the fine-tuned part
	// of the backbone starts.
	TrainableFrom string `yaml:"trainable_from" json:"trainable_from"`
	// TailPrefix is which model computes the activations at the cut that the tail trains on and
	// that the exported model feeds it: "float", the float conversion of an int8 backbone, or
	// "int8", the int8 backbone's own layers dequantized at the cut (only where the backbone runs
	// int8: backbone.dequantize never, or auto on a VNNI CPU), or "auto", int8 where the backbone
	// runs int8 and float elsewhere.
	TailPrefix TailPrefix `yaml:"tail_prefix" json:"tail_prefix"`
	// LR is the learning rate of the fine-tuned backbone part (the head uses optimizer.lr).
	LR float64 `yaml:"lr" json:"lr"`
}

// trainsTail reports whether a run fine-tunes the tail of the backbone.
func (b BackboneConfig) TrainsTail() bool { return b.TrainBlocks > 0 || b.TrainableFrom != "" }

// PreprocessConfig is how images become network input.
type PreprocessConfig struct {
	Size          [2]int     `yaml:"size" json:"size"` // height, width
	Resize        string     `yaml:"resize" json:"resize"`
	ResizeShorter int        `yaml:"resize_shorter" json:"resize_shorter"`
	Mean          [3]float32 `yaml:"mean" json:"mean"`
	Std           [3]float32 `yaml:"std" json:"std"`
	Scale         float32    `yaml:"scale" json:"scale"`
	ChannelOrder  string     `yaml:"channel_order" json:"channel_order"`
	Workers       int        `yaml:"workers" json:"workers"`
}

// HeadConfig is the trainable embedding and classifier on top of the features.
type HeadConfig struct {
	EmbeddingDim int `yaml:"embedding_dim" json:"embedding_dim"`
	// Center subtracts the training features' mean; Normalize L2-normalizes the features before
	// the embedding layer. Both are exported into the ONNX model.
	Center    bool `yaml:"center" json:"center"`
	Normalize bool `yaml:"normalize" json:"normalize"`
	// Init is "pca" (embedding layer = top principal directions of the training features) or
	// "random" (PyTorch's nn.Linear default).
	Init HeadInit `yaml:"init" json:"init"`
	// ClassifierInit is "means" (each class's weight row is the normalized mean embedding of its
	// training images times ClassifierScale, bias 0: the logits are scaled cosine similarities
	// to the class means from the first step) or "random" (nn.Linear default).
	ClassifierInit  ClassifierInit `yaml:"classifier_init" json:"classifier_init"`
	ClassifierScale float64        `yaml:"classifier_scale" json:"classifier_scale"`
}

// LossConfig holds the Group Loss hyperparameters.
type LossConfig struct {
	// Name is group (the Group Loss), or a baseline trained by the same loop: softmax
	// (cross-entropy of the classifier), triplet (batch-hard), contrastive, proxy_anchor or
	// multi_similarity.
	Name            LossName `yaml:"name" json:"name"`
	Temperature     float64  `yaml:"temperature" json:"temperature"`
	Iterations      int      `yaml:"iterations" json:"iterations"`
	Scaling         float64  `yaml:"scaling" json:"scaling"`
	AnchorsPerClass int      `yaml:"anchors_per_class" json:"anchors_per_class"`
	// Margins of the baselines (0 means the loss's default: triplet 0.2, contrastive 0 and 1,
	// proxy_anchor alpha 32, margin 0.1, multi_similarity alpha 2, beta 50, base 0.5, margin 0.1).
	TripletMargin float64 `yaml:"triplet_margin,omitempty" json:"triplet_margin,omitempty"`
	PosMargin     float64 `yaml:"pos_margin,omitempty" json:"pos_margin,omitempty"`
	NegMargin     float64 `yaml:"neg_margin,omitempty" json:"neg_margin,omitempty"`
	ProxyAlpha    float64 `yaml:"proxy_alpha,omitempty" json:"proxy_alpha,omitempty"`
	ProxyMargin   float64 `yaml:"proxy_margin,omitempty" json:"proxy_margin,omitempty"`
	MSAlpha       float64 `yaml:"ms_alpha,omitempty" json:"ms_alpha,omitempty"`
	MSBeta        float64 `yaml:"ms_beta,omitempty" json:"ms_beta,omitempty"`
	MSBase        float64 `yaml:"ms_base,omitempty" json:"ms_base,omitempty"`
	MSMargin      float64 `yaml:"ms_margin,omitempty" json:"ms_margin,omitempty"`
	// PretrainEpochs > 0 trains the first PretrainEpochs epochs (of optimizer.epochs) with the
	// softmax cross-entropy of the classifier logits only, as the reference fine-tunes its network
	// for classification before the Group Loss; the loss above then takes over from the same
	// parameters with a fresh optimizer state (see train.Options.PretrainEpochs).
	PretrainEpochs int `yaml:"pretrain_epochs" json:"pretrain_epochs"`
}

// headLoss converts the config to the head's loss settings, defaults filled in.
func (l LossConfig) HeadLoss() head.LossConfig {
	hl := head.DefaultLossConfig(head.LossKind(l.Name))
	hl.Group = head.GroupLoss{Temperature: l.Temperature, Iterations: l.Iterations, Scaling: l.Scaling, AnchorsPerClass: l.AnchorsPerClass}
	for _, f := range []struct {
		dst *float64
		v   float64
	}{{&hl.TripletMargin, l.TripletMargin}, {&hl.PosMargin, l.PosMargin}, {&hl.NegMargin, l.NegMargin},
		{&hl.ProxyAlpha, l.ProxyAlpha}, {&hl.ProxyMargin, l.ProxyMargin},
		{&hl.MSAlpha, l.MSAlpha}, {&hl.MSBeta, l.MSBeta}, {&hl.MSBase, l.MSBase}, {&hl.MSMargin, l.MSMargin}} {
		if f.v != 0 {
			*f.dst = f.v
		}
	}
	return hl
}

// SamplerConfig is the classes x samples-per-class batch sampler (in YAML, sampler "balanced").
type SamplerConfig struct {
	ClassesPerBatch int `yaml:"classes_per_batch" json:"classes_per_batch"`
	SamplesPerClass int `yaml:"samples_per_class" json:"samples_per_class"`
}

// OptimizerConfig is the optimizer and its learning-rate schedule.
type OptimizerConfig struct {
	Name        OptimizerName `yaml:"name" json:"name"`
	LR          float64       `yaml:"lr" json:"lr"`
	WeightDecay float64       `yaml:"weight_decay" json:"weight_decay"`
	Epochs      int           `yaml:"epochs" json:"epochs"`
	// LRSteps are the epochs (1-based) after which the learning rate is multiplied by LRGamma
	// (in YAML, the args steps and gamma of lr_schedule "multistep").
	LRSteps []int   `yaml:"lr_steps" json:"lr_steps"`
	LRGamma float64 `yaml:"lr_gamma" json:"lr_gamma"`
	// ReloadBestAfter are the epochs (1-based) after which training goes on from the parameters of
	// the best validated epoch so far (after that epoch's lr step, the optimizer state kept), as
	// the reference code does at its learning-rate drops.
	ReloadBestAfter []int `yaml:"reload_best_after" json:"reload_best_after"`
	// EMA > 0 keeps an exponential moving average of the parameters with this decay per step
	// and validates, selects and exports the average instead of the last step's parameters
	// (train.Options.EMA); 0: off.
	EMA float64 `yaml:"ema" json:"ema"`
}

// EvalConfig controls evaluation.
type EvalConfig struct {
	KMeansRestarts int `yaml:"kmeans_restarts" json:"kmeans_restarts"`
}

// DefaultConfig is the CUB-100 protocol of ../shared/reference/RESULTS.md: the shared int8
// MobileNetV2, train on labels 0-49, evaluate on 50-99.
//
// The training defaults were chosen by measurement on that protocol (README, "How the defaults
// were chosen"): the last three inverted-residual blocks and the final 1x1 conv of the backbone
// are fine-tuned with the head (train_blocks 3, backbone lr 1e-4), features centered and
// L2-normalized, an embedding layer started at the PCA(512) of the training features and a
// classifier started at the class means scaled by 64 (the loss is meaningful from the first step),
// the Multi-Similarity loss (alpha 2, beta 50, base 0.5, margin 0.1), RAdam at 1.5e-4 for 15
// epochs with the moving average of the parameters (decay 0.99) validated and exported, training
// and evaluation on flip-averaged features. With 3 seeds this beat the Group Loss on every metric
// of the protocol; the Group Loss keeps its reference values (T 24, 1 iteration, NLL scaling 1, 2
// anchors per class) in the Loss fields for `loss: {name: group}`. For the head alone
// (TrainBlocks 0) Center false and 20 epochs are better.
func DefaultConfig() Config {
	shared := SharedDir()
	return Config{
		Data:              filepath.Join(shared, "data", "cub100"),
		TrainClasses:      0,
		ValidationClasses: 10,
		Cache:             ".cache/features",
		Seed:              1,
		Threads:           2,
		OnBadImage:        BadImageFail,
		Backbone: BackboneConfig{Path: filepath.Join(shared, "models", "mobilenetv2-12-int8.onnx"), BatchSize: 32, Dequantize: DequantizeAuto, TailPrefix: TailPrefixAuto,
			Flip: true, FlipTTA: true, TrainBlocks: 3, LR: 1e-4},
		Preprocess: PreprocessConfig{Size: [2]int{224, 224}, Resize: "resize", Mean: [3]float32{0.485, 0.456, 0.406},
			Std: [3]float32{0.229, 0.224, 0.225}, Scale: 1.0 / 255, ChannelOrder: "RGB", Workers: 2},
		Head: HeadConfig{EmbeddingDim: 512, Center: true, Normalize: true, Init: HeadInitPCA, ClassifierInit: ClassifierInitMeans, ClassifierScale: 64},
		Loss: LossConfig{Name: LossMultiSimilarity, MSAlpha: 2, MSBeta: 50, MSBase: 0.5, MSMargin: 0.1,
			Temperature: 24, Iterations: 1, Scaling: 1, AnchorsPerClass: 2},
		Sampler:   SamplerConfig{ClassesPerBatch: 6, SamplesPerClass: 9},
		Optimizer: OptimizerConfig{Name: OptimizerRAdam, LR: 1.5e-4, WeightDecay: 6e-6, Epochs: 15, LRGamma: 0.1, EMA: 0.99},
		Eval:      EvalConfig{KMeansRestarts: 10},
		Export:    DefaultExportConfig(),
		Ensemble:  1,
	}
}

// ensembleSize is the number of heads a run trains.
func (c *Config) EnsembleSize() int { return max(c.Ensemble, 1) }

// SharedDir is $PIPELINE_SHARED_DIR, else ../shared.
func SharedDir() string {
	if d := os.Getenv("PIPELINE_SHARED_DIR"); d != "" {
		return d
	}
	return filepath.Join("..", "shared")
}

// LoadConfig reads a YAML config over the defaults. Errors wrap ErrInvalid; unknown keys and
// wrong types name the file, the line and the key, with a hint (see Hint).
func LoadConfig(path string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return DefaultConfig(), hint.With(fmt.Errorf("%w: %w", ErrInvalid, err), "check the --config path")
	}
	return ParseConfig(raw, path)
}

// ParseConfig is LoadConfig on the file's content; name stands for the file in errors.
func ParseConfig(raw []byte, name string) (Config, error) {
	path := name
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		if p := fileString(raw, "preset"); p != "" { // e.g. Group Loss args: valid over the preset's loss, not the default's
			return overPreset(raw, path, p)
		}
		return cfg, yamlError(path, raw, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return cfg, hint.With(fmt.Errorf("%w: %q holds more than one YAML document", ErrInvalid, path),
			"remove the \"---\" separator and what follows it")
	}
	if cfg.Preset != "" { // the preset goes under the file's keys: decode them again over it
		return overPreset(raw, path, cfg.Preset)
	}
	if len(cfg.Adapted) == 0 { // "adapted: []" is the default, nil
		cfg.Adapted = nil
	}
	return cfg, nil
}

// Validate checks the config before anything runs. Errors wrap ErrInvalid.
func (c *Config) Validate() error {
	var errs []string
	if c.Data == "" {
		errs = append(errs, "data is empty")
	}
	if c.Backbone.Path == "" {
		errs = append(errs, "backbone.path is empty")
	}
	if c.TrainClasses < 0 {
		errs = append(errs, fmt.Sprintf("train_classes %d < 0", c.TrainClasses))
	}
	if c.TrainClasses == 1 {
		errs = append(errs, "train_classes 1: the Group Loss needs at least 2 training classes")
	}
	if c.ValidationClasses < 0 {
		errs = append(errs, fmt.Sprintf("validation_classes %d < 0", c.ValidationClasses))
	}
	if c.Head.EmbeddingDim < 1 {
		errs = append(errs, fmt.Sprintf("head.embedding_dim %d < 1", c.Head.EmbeddingDim))
	}
	errs = append(errs, c.sizeErrors()...)
	for _, err := range []error{badImagePolicy.check(c.OnBadImage), headInits.check(c.Head.Init), classifierInits.check(c.Head.ClassifierInit),
		optimizerNames.check(c.Optimizer.Name), dequantizeModes.check(c.Backbone.Dequantize), tailPrefixes.check(c.Backbone.TailPrefix)} {
		if err != nil {
			errs = append(errs, strings.TrimPrefix(err.Error(), "config: "))
		}
	}
	if c.Head.ClassifierInit == "means" && !(c.Head.ClassifierScale > 0) {
		errs = append(errs, fmt.Sprintf("head.classifier_init: means scale %g must be > 0", c.Head.ClassifierScale))
	}
	if err := c.Loss.HeadLoss().Validate(); err != nil {
		errs = append(errs, fmt.Sprintf("loss: %v", err))
	}
	if c.Sampler.ClassesPerBatch < 2 || c.Sampler.SamplesPerClass < 2 {
		errs = append(errs, fmt.Sprintf("sampler: need at least 2 classes x 2 samples per batch, got %d x %d", c.Sampler.ClassesPerBatch, c.Sampler.SamplesPerClass))
	}
	if (c.Loss.Name == "group" || c.Loss.Name == "") && c.Loss.AnchorsPerClass >= c.Sampler.SamplesPerClass { // other losses take no anchors
		errs = append(errs, fmt.Sprintf("loss: group anchors_per_class %d must be below the sampler's samples_per_class %d", c.Loss.AnchorsPerClass, c.Sampler.SamplesPerClass))
	}
	if c.Optimizer.LR <= 0 {
		errs = append(errs, fmt.Sprintf("optimizer: lr %g must be > 0", c.Optimizer.LR))
	}
	if c.Optimizer.Epochs < 1 {
		errs = append(errs, fmt.Sprintf("optimizer.epochs %d < 1", c.Optimizer.Epochs))
	}
	if c.Loss.PretrainEpochs < 0 || (c.Loss.PretrainEpochs > 0 && c.Loss.PretrainEpochs >= c.Optimizer.Epochs) {
		errs = append(errs, fmt.Sprintf("loss.pretrain_epochs %d must be >= 0 and below optimizer.epochs %d", c.Loss.PretrainEpochs, c.Optimizer.Epochs))
	}
	if !(c.Optimizer.EMA >= 0 && c.Optimizer.EMA < 1) {
		errs = append(errs, fmt.Sprintf("optimizer.ema %g must be in [0, 1) (the moving average's decay per step; 0: off)", c.Optimizer.EMA))
	}
	for _, e := range c.Optimizer.ReloadBestAfter {
		if e < 1 {
			errs = append(errs, fmt.Sprintf("optimizer.reload_best_after: epoch %d < 1 (epochs are 1-based)", e))
		}
	}
	if c.Backbone.TrainBlocks < 0 || (c.Backbone.TrainBlocks > 0 && c.Backbone.TrainableFrom != "") || (c.Backbone.TrainsTail() && !(c.Backbone.LR > 0)) {
		errs = append(errs, fmt.Sprintf("backbone: train_blocks %d must be >= 0, not set together with trainable_from %q, and lr %g > 0 to fine-tune", c.Backbone.TrainBlocks, c.Backbone.TrainableFrom, c.Backbone.LR))
	}
	if c.Backbone.BatchSize < 1 {
		errs = append(errs, fmt.Sprintf("backbone.batch_size %d < 1", c.Backbone.BatchSize))
	}
	errs = append(errs, c.paperErrors()...)
	errs = append(errs, c.Export.validate()...)
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// Bounds on config sizes. Each is far above any useful value and far below what would exhaust
// memory or threads before the run could say what is wrong (embedding_dim 1e9 and threads 100000
// ended in "fatal error: runtime: out of memory" with a stack trace).
const (
	MaxEmbeddingDim = 1 << 16
	MaxBatchSize    = 1 << 16
	MaxWorkers      = 1024
)

// sizeErrors lists the config's sizes that are over their bounds (part of Validate).
func (c *Config) sizeErrors() []string {
	var errs []string
	check := func(name string, v, limit int) {
		if v > limit {
			errs = append(errs, fmt.Sprintf("%s %d is over the limit of %d", name, v, limit))
		}
	}
	check("head.embedding_dim", c.Head.EmbeddingDim, MaxEmbeddingDim)
	check("threads", c.Threads, ort.MaxThreads)
	check("preprocess.workers", c.Preprocess.Workers, MaxWorkers)
	check("backbone.batch_size", c.Backbone.BatchSize, MaxBatchSize)
	check("eval.kmeans_restarts", c.Eval.KMeansRestarts, metrics.MaxKMeansRestarts)
	check("sampler.classes_per_batch x samples_per_class", c.Sampler.ClassesPerBatch*c.Sampler.SamplesPerClass, MaxBatchSize)
	return errs
}

// toData converts the config's preprocessing to the data package's.
func (p PreprocessConfig) ToData() (data.Preprocess, error) {
	d := data.Preprocess{Height: p.Size[0], Width: p.Size[1], Resize: p.Resize, ResizeShorter: p.ResizeShorter,
		Mean: p.Mean, Std: p.Std, Scale: p.Scale, ChannelOrder: p.ChannelOrder}
	return d, d.Validate()
}
