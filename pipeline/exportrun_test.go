package pipeline

import (
	"context"
	"testing"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/pipeline/config"
)

// TestExportNamesTheLoss: the exported model's metadata names the loss that trained it, for the
// head alone and for the tail + head (a triplet run says "triplet", the Group Loss "group_loss").
func TestExportNamesTheLoss(t *testing.T) {
	needORT(t)
	cases := []struct {
		name, loss, want string
		tail             bool
	}{
		{"head, triplet", "triplet", "triplet", false},
		{"head, group", "group", "group_loss", false},
		{"tail + head, triplet", "triplet", "triplet", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := tinyConfig(t)
			if c.tail {
				cfg = tinyTailConfig(t)
			}
			cfg.Loss.Name, cfg.KeepTrained, cfg.Export.Int8 = config.LossName(c.loss), true, false
			sum, err := Run(context.Background(), cfg, RunEnv{})
			if err != nil {
				t.Fatal(err)
			}
			if (sum.Tail != nil) != c.tail {
				t.Fatalf("tail %+v, want a tail run: %v", sum.Tail, c.tail)
			}
			info, err := backbone.Inspect(sum.Export.Path)
			if err != nil {
				t.Fatal(err)
			}
			if got := info.Metadata["loss"]; got != c.want {
				t.Errorf("model metadata loss %q, want %q", got, c.want)
			}
		})
	}
}
