package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/grouploss/pipeline/pipeline/config"
)

// runFolderMarkers are the files that make a folder recognizable as a run folder: every run
// writes config.yaml first, and metrics.json when it ends.
var runFolderMarkers = []string{"config.yaml", "metrics.json"}

// checkReplaceable refuses to let --force replace out unless it is recognizably a run folder (it
// holds config.yaml or metrics.json), and never when it holds a file the run uses: the data, the
// backbone or the cache (`run --data D/data --out D --force` deleted the data and a notes file).
func checkReplaceable(out string, uses map[string]string) error {
	marked := false
	for _, m := range runFolderMarkers {
		if fi, err := os.Stat(filepath.Join(out, m)); err == nil && fi.Mode().IsRegular() {
			marked = true
		}
	}
	if !marked {
		return withHint(fmt.Errorf("%w: --force replaces only a run folder, and %q holds neither %s", config.ErrInvalid, out, strings.Join(runFolderMarkers, " nor ")),
			"choose a new --out folder, or delete that folder yourself if it is meant to go")
	}
	for _, what := range []string{"data", "backbone", "cache"} {
		p := uses[what]
		if p != "" && within(p, out) {
			return withHint(fmt.Errorf("%w: --force would replace %q, which holds the %s in use (%s)", config.ErrInvalid, out, what, p),
				"choose an --out folder that holds none of the data, the backbone and the cache")
		}
	}
	return nil
}

// within reports whether path is dir or inside it, after making both absolute and resolving
// symbolic links where they exist.
func within(path, dir string) bool {
	resolve := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			p = a
		}
		// Resolve the longest existing prefix (the cache folder may not exist yet).
		rest := ""
		for q := p; ; q = filepath.Dir(q) {
			if r, err := filepath.EvalSymlinks(q); err == nil {
				return filepath.Join(r, rest)
			}
			if filepath.Dir(q) == q {
				return p
			}
			rest = filepath.Join(filepath.Base(q), rest)
		}
	}
	rel, err := filepath.Rel(resolve(dir), resolve(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// errRunFolderBusy is the error of a run folder that another run holds (claimRunFolder).
var errRunFolderBusy = errors.New("in use by another run")

// discardRunFolder removes what a run that failed on a config error wrote (config.yaml,
// metrics.json, ...): created says the run created dir, else only its files are removed.
func discardRunFolder(dir string, created bool) {
	if created {
		os.RemoveAll(dir)
		return
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}
