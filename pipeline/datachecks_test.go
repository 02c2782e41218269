package pipeline

import (
	"context"
	"os"
	"strings"
	"testing"
)

// rewriteManifest rewrites the manifest at path line by line with edit (nil drops the line).
func rewriteManifest(t *testing.T, path string, edit func(line string, header bool) *string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if e := edit(l, i == 0); e != nil {
			out = append(out, *e)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestManifestSplitColumnWarned: a manifest's split column was read and silently ignored; the run
// now says that it does not use it.
func TestManifestSplitColumnWarned(t *testing.T) {
	needORT(t)
	cfg := tinyConfig(t)
	rewriteManifest(t, cfg.Data, func(l string, header bool) *string {
		s := l + ",train"
		if header {
			s = l + ",split"
		}
		return &s
	})
	sum, err := Run(context.Background(), cfg, RunEnv{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(sum.Warnings, "\n"), "per-image split") {
		t.Fatalf("warnings %q say nothing of the unused split column", sum.Warnings)
	}
}

// TestEvalSingletonsRefused: when every evaluation class has one image the run stops before
// writing anything (it reported R@1 0 and NMI 1.0 with exit 0).
func TestEvalSingletonsRefused(t *testing.T) {
	needORT(t)
	cfg := tinyConfig(t)
	rewriteManifest(t, cfg.Data, func(l string, header bool) *string {
		// colorDataset(8, 10): classes c4..c7 are the evaluation half; keep one image of each.
		for c := 4; c < 8; c++ {
			if strings.HasPrefix(l, "c"+string(rune('0'+c))+"/") && !strings.HasPrefix(l, "c"+string(rune('0'+c))+"/0.png") {
				return nil
			}
		}
		return &l
	})
	_, err := Run(context.Background(), cfg, RunEnv{})
	if err == nil || !strings.Contains(err.Error(), "has a single image") || Hint(err) == "" {
		t.Fatalf("got %v, want a refusal with a hint", err)
	}
	if _, err := os.Stat(cfg.Out); !os.IsNotExist(err) {
		t.Fatalf("run folder written: %v", err)
	}
}
