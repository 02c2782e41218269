package config

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParseConfig feeds arbitrary YAML to the config parser. Properties: no panic (also in
// Validate); an error wraps ErrInvalid and names the file; an accepted config round-trips: written
// back as YAML (as config.yaml in a run folder is) and parsed again it is the same config.
// Seeds in testdata/fuzz/FuzzParseConfig: configs/cub100.yaml and small valid and broken configs.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("seed: 3\noptimizer:\n  epochs: 2\n  lr_schedule: {args: {steps: [1]}}\n"))
	const name = "fuzz.yaml"
	f.Fuzz(func(t *testing.T, in []byte) {
		cfg, err := ParseConfig(in, name)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), strconv.Quote(name)) {
				t.Fatalf("error %v does not wrap ErrInvalid or name the file", err)
			}
			return
		}
		_ = cfg.Validate()
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("accepted config does not marshal: %v", err)
		}
		again, err := ParseConfig(out, name)
		if err != nil {
			t.Fatalf("written config refused: %v\n%s", err, out)
		}
		out2, _ := yaml.Marshal(again)
		if !bytes.Equal(out, out2) { // compared as YAML: NaN != NaN for ==
			t.Fatalf("round trip changed the config:\n%s\n---\n%s", out, out2)
		}
	})
}
