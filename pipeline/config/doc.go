// Package config is the configuration of `pipeline run`: the Config struct and its sections,
// DefaultConfig (the CUB-100 protocol), the presets of the Group Loss reference code, and
// Validate.
//
// A config is read from YAML (LoadConfig, ParseConfig) over the defaults, or the preset's. Unknown
// keys, wrong types and values outside a closed set are errors wrapping ErrInvalid that name the
// file, the line and the dotted key, with a hint of what is valid (yamlerrors.go); every error of
// a file is reported at once. The parts with a choice of implementation (loss, optimizer and its
// learning-rate schedule, sampler, the head's initializations) are written {name, args}
// (form.go). The closed sets of names are string types with text marshalling (enum.go), so that
// YAML, JSON and flags refuse the same values with the same words.
//
// The package holds no run logic: package pipeline adapts a config to the data and runs it.
package config
