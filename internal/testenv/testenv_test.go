package testenv

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"testing"
)

func TestSmallCUB(t *testing.T) {
	p := SmallCUB(t, 3, 4)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, r := range rows[1:] {
		count[r[1]]++
		if _, err := os.Stat(r[0]); err != nil {
			t.Errorf("row %v: %v", r, err)
		}
	}
	if len(rows) != 13 || count["0"] != 4 || count["1"] != 4 || count["2"] != 4 {
		t.Errorf("%d rows, per label %v; want a header and 4 images of each of labels 0, 1, 2", len(rows), count)
	}
}

// TestSharedDirSkipsWhenAbsent: a missing shared folder skips (it does not fail), naming the folder.
func TestSharedDirSkipsWhenAbsent(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-shared")
	t.Setenv(SharedEnv, missing)
	var skipped bool
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		SharedDir(t)
	})
	if !skipped {
		t.Errorf("SharedDir with %s=%q did not skip", SharedEnv, missing)
	}
	t.Setenv(SharedEnv, t.TempDir())
	if d := SharedDir(t); d != os.Getenv(SharedEnv) {
		t.Errorf("SharedDir = %q, want $%s", d, SharedEnv)
	}
}

func TestORTLibrary(t *testing.T) {
	lib := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(ORTEnv, lib)
	if got := ORTLibrary(t); got != lib {
		t.Errorf("ORTLibrary = %q, want %q", got, lib)
	}
}
