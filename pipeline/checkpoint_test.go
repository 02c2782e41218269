package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/gob"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/train"
)

func testCheckpoint(rows, cols int) *Checkpoint {
	vals := func(n int, seed float64) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = math.Sin(seed+float64(i)) * 1e-3
		}
		return v
	}
	cfg := config.DefaultConfig()
	cfg.Seed = 9
	return &Checkpoint{
		Epoch: 4, Score: 0.25, Center: []float32{1, 2}, Normalize: true, Classes: []int{3, 5},
		Params: []NamedTensor{{Name: "emb.weight", Shape: []int{rows, cols}, Value: vals(rows*cols, 1)}, {Name: "emb.bias", Shape: []int{rows}, Value: vals(rows, 2)}},
		Optimizer: train.OptimizerState{Steps: 17,
			M: map[string][]float64{"emb.weight": vals(rows*cols, 3), "emb.bias": vals(rows, 4)},
			V: map[string][]float64{"emb.weight": vals(rows*cols, 5), "emb.bias": vals(rows, 6)}},
		Config: cfg,
		Train: &train.State{Epoch: 4, LR: 1e-4, Best: [][]float64{vals(rows*cols, 7), vals(rows, 8)}, BestEpoch: 3,
			BestScore: 0.25, Since: 1, Steps: 17, History: []train.EpochStats{{Epoch: 1, Loss: 2.5}, {Epoch: 2, Loss: math.Inf(1)}},
			EMA: [][]float64{vals(rows*cols, 9), vals(rows, 10)}},
	}
}

// TestCheckpointRoundTrip: a checkpoint (parameters, optimizer moments, training state) loads
// back equal, bit for bit; version-1 (all gob) files still load; a truncated file or a flipped
// byte is ErrCorruptCheckpoint. It also times a 1280x512 head (the default), whose last.ckpt is
// written every epoch.
func TestCheckpointRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c := testCheckpoint(3, 4)
	p := filepath.Join(dir, "c.ckpt")
	if err := SaveCheckpoint(p, c); err != nil {
		t.Fatal(err)
	}
	got, err := LoadCheckpoint(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip:\n%+v\n%+v", got, c)
	}
	if !reflect.DeepEqual(testCheckpoint(3, 4), c) {
		t.Fatal("SaveCheckpoint modified the checkpoint")
	}

	// Version 1.
	var buf bytes.Buffer
	buf.WriteString(checkpointMagicV1)
	if err := gob.NewEncoder(&buf).Encode(c); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes()[len(checkpointMagicV1):])
	buf.Write(sum[:])
	v1 := filepath.Join(dir, "v1.ckpt")
	os.WriteFile(v1, buf.Bytes(), 0o644)
	if got, err := LoadCheckpoint(v1); err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("version 1: %v", err)
	}

	raw, _ := os.ReadFile(p)
	for name, b := range map[string][]byte{
		"truncated": raw[:len(raw)/2],
		"flipped":   append(append(append([]byte(nil), raw[:100]...), raw[100]^1), raw[101:]...),
		"empty":     nil,
		"foreign":   []byte("GLFEAT\x00\nsomething else entirely, long enough to pass the size check"),
	} {
		q := filepath.Join(dir, name)
		os.WriteFile(q, b, 0o644)
		if _, err := LoadCheckpoint(q); !errors.Is(err, ErrCorruptCheckpoint) {
			t.Errorf("%s: %v", name, err)
		}
	}

	big := testCheckpoint(512, 1280)
	t0 := time.Now()
	if err := SaveCheckpoint(p, big); err != nil {
		t.Fatal(err)
	}
	save := time.Since(t0)
	t0 = time.Now()
	if got, err := LoadCheckpoint(p); err != nil || !reflect.DeepEqual(got.Optimizer, big.Optimizer) {
		t.Fatalf("big: %v", err)
	}
	t.Logf("1280x512 head with optimizer and best-so-far: save %v, load %v", save, time.Since(t0))
}
