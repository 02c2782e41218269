package pipeline

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/grouploss/pipeline/pipeline/config"
)

// TestPresetSchedule runs the cub preset end to end on the tiny CNN: 70 epochs, the learning
// rate the reference's until epoch 30 and a tenth of it from epoch 31 on (lr_steps [30]: train.Fit
// multiplies after the listed epochs), training going on from the best parameters after epochs
// 30 and 50 (the reference reloads its best model at the start of epochs 31 and 51), Group Loss
// with T 24.
func TestPresetSchedule(t *testing.T) {
	needORT(t)
	base := tinyConfig(t)
	cfg := base
	if err := config.ApplyPreset(&cfg, "cub"); err != nil {
		t.Fatal(err)
	}
	cfg.Sampler = base.Sampler // the tiny dataset has 3 training classes
	cfg.Loss.AnchorsPerClass = 1
	sum, err := Run(context.Background(), cfg, RunEnv{})
	if err != nil {
		t.Fatal(err)
	}
	h := sum.Training.History
	if len(h) != 71 || sum.Timing.Epochs != 70 {
		t.Fatalf("%d history entries, %d epochs; want 71 (epoch 0 + 70), 70", len(h), sum.Timing.Epochs)
	}
	lr := 1.563663718906821e-4
	for _, st := range h[1:] {
		want := lr
		if st.Epoch > 30 {
			want = lr / 10
		}
		if diff := st.LR - want; diff > 1e-18 || diff < -1e-18 {
			t.Fatalf("epoch %d lr %g, want %g", st.Epoch, st.LR, want)
		}
		if st.ReloadBest != (st.Epoch == 30 || st.Epoch == 50) || st.Pretrain {
			t.Errorf("epoch %d: reload_best %v, pretrain %v", st.Epoch, st.ReloadBest, st.Pretrain)
		}
	}
	written, err := config.LoadConfig(filepath.Join(cfg.Out, "config.yaml"))
	if err != nil || written.Preset != "cub" || written.Loss.Temperature != 24 {
		t.Errorf("config.yaml: preset %q T %g (%v)", written.Preset, written.Loss.Temperature, err)
	}
}
