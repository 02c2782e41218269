// Package testenv locates what the tests need from outside the repository: the read-only shared
// data (../shared beside the repository root, or $PIPELINE_SHARED_DIR) and the onnxruntime library
// ($ONNXRUNTIME_SHARED_LIBRARY_PATH, set by the Makefile), and the servers of the distributed
// tests (servers.go). Only the shared data and the servers may be absent: the test then skips,
// saying how to provide them. A missing onnxruntime library fails the test, since
// `make test` installs it. It imports only the standard library, so every package's tests can use it.
package testenv

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// SharedEnv and ORTEnv are the environment variables testenv reads.
const (
	SharedEnv = "PIPELINE_SHARED_DIR"
	ORTEnv    = "ONNXRUNTIME_SHARED_LIBRARY_PATH"
)

// SharedDir returns the shared data folder: $PIPELINE_SHARED_DIR, else ../shared beside the
// repository root (the folder holding go.mod, found above the working directory). It skips the
// test when the folder is absent.
func SharedDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv(SharedEnv); d != "" {
		if _, err := os.Stat(d); err != nil {
			t.Skipf("%s=%q does not exist: point it at the shared data or run `make test` beside ../shared", SharedEnv, d)
		}
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			d := filepath.Join(filepath.Dir(dir), "shared")
			if _, err := os.Stat(d); err != nil {
				t.Skipf("shared data not found at %q: set %s or run `make test` beside ../shared", d, SharedEnv)
			}
			return d
		}
		if filepath.Dir(dir) == dir {
			t.Skipf("no go.mod above %q, so ../shared cannot be located: set %s or run `make test`", wd, SharedEnv)
		}
	}
}

// SharedPath returns the path of elem inside the shared data folder, skipping the test when it is
// absent.
func SharedPath(t testing.TB, elem ...string) string {
	t.Helper()
	p := filepath.Join(append([]string{SharedDir(t)}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared file %q not found: run `make test` with the complete ../shared beside the repository", p)
	}
	return p
}

// Int8Model returns the shared int8 MobileNetV2 (the default backbone), or skips the test.
func Int8Model(t testing.TB) string {
	t.Helper()
	return SharedPath(t, "models", "mobilenetv2-12-int8.onnx")
}

// CUB100 returns the shared CUB-100 folder (with its manifest.csv), or skips the test.
func CUB100(t testing.TB) string {
	t.Helper()
	return filepath.Dir(SharedPath(t, "data", "cub100", "manifest.csv"))
}

// ORTLibrary returns the onnxruntime library of $ONNXRUNTIME_SHARED_LIBRARY_PATH. It fails the test
// when the variable is unset or names no file: `make test` installs the library and sets it.
func ORTLibrary(t testing.TB) string {
	t.Helper()
	p := os.Getenv(ORTEnv)
	if p == "" {
		t.Fatalf("onnxruntime library not configured (%s is unset): run the tests with `make test`, which installs it and sets it", ORTEnv)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("onnxruntime library %s=%q is missing (%v): run `make ort` or `make test`", ORTEnv, p, err)
	}
	return p
}

// SmallCUB writes a manifest (path,label) of the first per images of each of the first classes
// classes of the shared CUB-100 into a temporary folder of the test and returns its path; it skips
// the test when CUB-100 is absent.
func SmallCUB(t testing.TB, classes, per int) string {
	t.Helper()
	root := CUB100(t)
	f, err := os.Open(filepath.Join(root, "manifest.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("path,label\n")
	count := map[int]int{}
	for _, r := range rows[1:] {
		l, err := strconv.Atoi(r[1])
		if err != nil {
			t.Fatalf("%s: label %q: %v", f.Name(), r[1], err)
		}
		if l < classes && count[l] < per {
			count[l]++
			b.WriteString(filepath.Join(root, r[0]) + "," + r[1] + "\n")
		}
	}
	p := filepath.Join(t.TempDir(), "small.csv")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// RepoRoot returns the repository root: the folder holding go.mod, found above the working
// directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %q", wd)
		}
	}
}
