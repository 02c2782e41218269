package config

import (
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/pipeline/export"
	"github.com/grouploss/pipeline/pipeline/train"
)

// The closed sets of names of the config: each a string type whose values are listed once (where
// a package implements the choice, from that package's constants), read and written as text.
// A value outside the set is an *EnumError naming the key and the allowed values; in a YAML file
// it also names the line.

// LossName is loss.name: the Group Loss or a baseline trained by the same loop (head.LossKind).
type LossName string

// The losses (head.LossKinds).
const (
	LossGroup           = LossName(head.LossGroup)
	LossSoftmax         = LossName(head.LossSoftmax)
	LossTriplet         = LossName(head.LossTriplet)
	LossContrastive     = LossName(head.LossContrastive)
	LossProxyAnchor     = LossName(head.LossProxyAnchor)
	LossMultiSimilarity = LossName(head.LossMultiSimilarity)
)

// OptimizerName is optimizer.name (train.OptimizerKind).
type OptimizerName string

// The optimizers (train.NewOptimizer).
const (
	OptimizerAdam  = OptimizerName(train.OptAdam)
	OptimizerAdamW = OptimizerName(train.OptAdamW)
	OptimizerRAdam = OptimizerName(train.OptRAdam)
)

// BadImagePolicy is on_bad_image: what an image that does not decode does to a run.
type BadImagePolicy string

const (
	BadImageFail BadImagePolicy = "fail" // stop before training, naming the file
	BadImageSkip BadImagePolicy = "skip" // leave it out, list it in skipped_images.txt
)

// Dequantize is backbone.dequantize: when an int8 backbone runs as its float conversion
// (backbone.UseFloat).
type Dequantize string

const (
	DequantizeAuto   Dequantize = backbone.DequantizeAuto
	DequantizeAlways Dequantize = backbone.DequantizeAlways
	DequantizeNever  Dequantize = backbone.DequantizeNever
)

// TailPrefix is backbone.tail_prefix: which model computes the activations at the cut that the
// fine-tuned tail trains on.
type TailPrefix string

const (
	// TailPrefixFloat: the float conversion of an int8 backbone (or the float backbone itself).
	TailPrefixFloat TailPrefix = "float"
	// TailPrefixInt8: the int8 backbone's own layers, dequantized at the cut (onnxruntime's int8
	// kernels: about twice as fast as the float conversion on VNNI CPUs).
	TailPrefixInt8 TailPrefix = "int8"
	// TailPrefixAuto: int8 where an int8 backbone runs its int8 kernels (backbone.dequantize),
	// float otherwise.
	TailPrefixAuto TailPrefix = "auto"
)

// ReduceRange is export.reduce_range: 7-bit weights in the int8 export.
type ReduceRange string

const (
	ReduceRangeAuto ReduceRange = "auto" // 7-bit weights when the exporting CPU is x86 without VNNI
	ReduceRangeOn   ReduceRange = "true"
	ReduceRangeOff  ReduceRange = "false"
)

// Calibration is export.calibration: how the int8 export chooses activation ranges
// (export.CalibrationMethods).
type Calibration string

const (
	CalibrationMinMax     Calibration = export.CalibMinMax
	CalibrationPercentile Calibration = export.CalibPercentile
	CalibrationEntropy    Calibration = export.CalibEntropy
)

// WeightRounding is export.weight_rounding: how the int8 export rounds the weights of 1x1 Convs.
type WeightRounding string

const (
	// WeightRoundingGPTQ: column by column with error feedback on the calibration inputs
	// (export.QuantizeWeightsGPTQ); other Convs to nearest.
	WeightRoundingGPTQ    WeightRounding = "gptq"
	WeightRoundingNearest WeightRounding = "nearest" // every weight to the nearest step
)

// HeadInit is head.init: how the embedding layer starts.
type HeadInit string

const (
	HeadInitPCA    HeadInit = "pca"    // the top principal directions of the training features
	HeadInitRandom HeadInit = "random" // PyTorch's nn.Linear default
)

// ClassifierInit is head.classifier_init: how the classifier starts.
type ClassifierInit string

const (
	ClassifierInitMeans  ClassifierInit = "means"  // scaled normalized class means
	ClassifierInitRandom ClassifierInit = "random" // PyTorch's nn.Linear default
)

// enum describes one closed set: its config key and its values in the order they are listed.
type enum[T ~string] struct {
	key    string
	values []T
}

var (
	lossNames       = enum[LossName]{"loss", convert[LossName](head.LossKinds)}
	optimizerNames  = enum[OptimizerName]{"optimizer", []OptimizerName{OptimizerAdam, OptimizerAdamW, OptimizerRAdam}}
	badImagePolicy  = enum[BadImagePolicy]{"on_bad_image", []BadImagePolicy{BadImageFail, BadImageSkip}}
	dequantizeModes = enum[Dequantize]{"backbone.dequantize", []Dequantize{DequantizeAuto, DequantizeAlways, DequantizeNever}}
	tailPrefixes    = enum[TailPrefix]{"backbone.tail_prefix", []TailPrefix{TailPrefixAuto, TailPrefixFloat, TailPrefixInt8}}
	reduceRanges    = enum[ReduceRange]{"export.reduce_range", []ReduceRange{ReduceRangeAuto, ReduceRangeOn, ReduceRangeOff}}
	calibrations    = enum[Calibration]{"export.calibration", convert[Calibration](export.CalibrationMethods)}
	weightRoundings = enum[WeightRounding]{"export.weight_rounding", []WeightRounding{WeightRoundingNearest, WeightRoundingGPTQ}}
	headInits       = enum[HeadInit]{"head.init", []HeadInit{HeadInitPCA, HeadInitRandom}}
	classifierInits = enum[ClassifierInit]{"head.classifier_init", []ClassifierInit{ClassifierInitMeans, ClassifierInitRandom}}
)

func convert[T, S ~string](s []S) []T {
	t := make([]T, len(s))
	for i, v := range s {
		t[i] = T(v)
	}
	return t
}

// EnumError is a value outside one of the config's closed sets of names.
type EnumError struct {
	Key     string   // the config key, "loss" for loss.name and the other components
	Value   string   // the value given
	Allowed []string // the valid values
}

func (e *EnumError) Error() string {
	return fmt.Sprintf("config: %s %q is not one of %s", e.Key, e.Value, strings.Join(e.Allowed, ", "))
}

// Is makes an EnumError an ErrInvalid.
func (e *EnumError) Is(target error) bool { return target == ErrInvalid }

// check returns an *EnumError when v is not in the set.
func (en enum[T]) check(v T) error {
	if slices.Contains(en.values, v) {
		return nil
	}
	return &EnumError{Key: en.key, Value: string(v), Allowed: convert[string](en.values)}
}

func (en enum[T]) unmarshalText(p *T, text []byte) error {
	if err := en.check(T(text)); err != nil {
		return err
	}
	*p = T(text)
	return nil
}

// unmarshalYAML reads a scalar of the set; errors are *yaml.TypeError messages with the line,
// collected with the file's other errors (see yamlError).
func (en enum[T]) unmarshalYAML(p *T, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!bool") {
		got := n.ShortTag()
		if n.Kind == yaml.ScalarNode {
			got += " `" + n.Value + "`"
		}
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: cannot unmarshal %s into string", n.Line, got)}}
	}
	if err := en.check(T(n.Value)); err != nil {
		return &yaml.TypeError{Errors: []string{hinted(fmt.Sprintf("line %d: %s %q is not one of %s", n.Line, en.key, n.Value, strings.Join(err.(*EnumError).Allowed, ", ")),
			fmt.Sprintf("the %s values are %s", en.key, strings.Join(err.(*EnumError).Allowed, ", ")))}}
	}
	*p = T(n.Value)
	return nil
}

// MarshalText and UnmarshalText (encoding.TextMarshaler, TextUnmarshaler: JSON, flag.TextVar)
// and UnmarshalYAML (errors with the line) of each set.

func (v LossName) MarshalText() ([]byte, error)           { return []byte(v), nil }
func (v *LossName) UnmarshalText(b []byte) error          { return lossNames.unmarshalText(v, b) }
func (v *LossName) UnmarshalYAML(n *yaml.Node) error      { return lossNames.unmarshalYAML(v, n) }
func (v OptimizerName) MarshalText() ([]byte, error)      { return []byte(v), nil }
func (v *OptimizerName) UnmarshalText(b []byte) error     { return optimizerNames.unmarshalText(v, b) }
func (v *OptimizerName) UnmarshalYAML(n *yaml.Node) error { return optimizerNames.unmarshalYAML(v, n) }
func (v BadImagePolicy) MarshalText() ([]byte, error)     { return []byte(v), nil }
func (v *BadImagePolicy) UnmarshalText(b []byte) error    { return badImagePolicy.unmarshalText(v, b) }
func (v *BadImagePolicy) UnmarshalYAML(n *yaml.Node) error {
	return badImagePolicy.unmarshalYAML(v, n)
}
func (v Dequantize) MarshalText() ([]byte, error)       { return []byte(v), nil }
func (v *Dequantize) UnmarshalText(b []byte) error      { return dequantizeModes.unmarshalText(v, b) }
func (v *Dequantize) UnmarshalYAML(n *yaml.Node) error  { return dequantizeModes.unmarshalYAML(v, n) }
func (v TailPrefix) MarshalText() ([]byte, error)       { return []byte(v), nil }
func (v *TailPrefix) UnmarshalText(b []byte) error      { return tailPrefixes.unmarshalText(v, b) }
func (v *TailPrefix) UnmarshalYAML(n *yaml.Node) error  { return tailPrefixes.unmarshalYAML(v, n) }
func (v ReduceRange) MarshalText() ([]byte, error)      { return []byte(v), nil }
func (v *ReduceRange) UnmarshalText(b []byte) error     { return reduceRanges.unmarshalText(v, b) }
func (v *ReduceRange) UnmarshalYAML(n *yaml.Node) error { return reduceRanges.unmarshalYAML(v, n) }
func (v Calibration) MarshalText() ([]byte, error)      { return []byte(v), nil }
func (v *Calibration) UnmarshalText(b []byte) error     { return calibrations.unmarshalText(v, b) }
func (v *Calibration) UnmarshalYAML(n *yaml.Node) error { return calibrations.unmarshalYAML(v, n) }
func (v WeightRounding) MarshalText() ([]byte, error)   { return []byte(v), nil }
func (v *WeightRounding) UnmarshalText(b []byte) error  { return weightRoundings.unmarshalText(v, b) }
func (v *WeightRounding) UnmarshalYAML(n *yaml.Node) error {
	return weightRoundings.unmarshalYAML(v, n)
}
func (v HeadInit) MarshalText() ([]byte, error)        { return []byte(v), nil }
func (v *HeadInit) UnmarshalText(b []byte) error       { return headInits.unmarshalText(v, b) }
func (v *HeadInit) UnmarshalYAML(n *yaml.Node) error   { return headInits.unmarshalYAML(v, n) }
func (v ClassifierInit) MarshalText() ([]byte, error)  { return []byte(v), nil }
func (v *ClassifierInit) UnmarshalText(b []byte) error { return classifierInits.unmarshalText(v, b) }
func (v *ClassifierInit) UnmarshalYAML(n *yaml.Node) error {
	return classifierInits.unmarshalYAML(v, n)
}
