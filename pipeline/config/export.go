package config

import (
	"fmt"
	"strings"
)

// ExportConfig chooses the deployable variants a run writes beside model.onnx.
type ExportConfig struct {
	// FlipTTA makes the exported models run the mirror pass (each image and its mirror through the
	// backbone, features averaged): twice the cost. Unset: as backbone.flip_tta (evaluation).
	FlipTTA *bool `yaml:"flip_tta" json:"flip_tta"`
	// Int8 also writes model-int8.onnx: static QDQ quantization (int8 weights per channel, uint8
	// activations calibrated on training images), the head and normalizations in float.
	Int8 bool `yaml:"int8" json:"int8"`
	// ReduceRange: auto, true or false. 7-bit weights keep onnxruntime's u8s8 kernels from
	// saturating on x86 CPUs without VNNI; auto decides from the exporting machine's CPU.
	ReduceRange ReduceRange `yaml:"reduce_range" json:"reduce_range"`
	// Calibration: minmax, percentile or entropy (see export.CalibrationMethods).
	Calibration Calibration `yaml:"calibration" json:"calibration"`
	// CalibrationImages is how many training images (a seeded sample) calibrate the activations.
	CalibrationImages int `yaml:"calibration_images" json:"calibration_images"`
	// BiasCorrection adds back, after the int8 backbone, the shift of its features' mean from the
	// float model's, measured on the calibration images (export.AddToTensor).
	BiasCorrection bool `yaml:"bias_correction" json:"bias_correction"`
	// WeightRounding: nearest, or gptq (1x1 Convs rounded with error feedback on the calibration
	// inputs: int8 embeddings closer to the float ones, R@1 not better; README, "Deploying").
	WeightRounding WeightRounding `yaml:"weight_rounding" json:"weight_rounding"`
}

// DefaultExportConfig is the export section of DefaultConfig.
func DefaultExportConfig() ExportConfig {
	return ExportConfig{Int8: true, ReduceRange: ReduceRangeAuto, Calibration: CalibrationPercentile, CalibrationImages: 256, BiasCorrection: true, WeightRounding: WeightRoundingNearest}
}

func (c ExportConfig) validate() []string {
	var errs []string
	for _, err := range []error{reduceRanges.check(c.ReduceRange), calibrations.check(c.Calibration), weightRoundings.check(c.WeightRounding)} {
		if err != nil {
			errs = append(errs, strings.TrimPrefix(err.Error(), "config: "))
		}
	}
	if c.CalibrationImages < 1 {
		errs = append(errs, fmt.Sprintf("export.calibration_images %d: want >= 1", c.CalibrationImages))
	}
	return errs
}
