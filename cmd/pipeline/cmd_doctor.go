package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
)

// doctorORTVersion is the onnxruntime version the project pins (scripts/install-onnxruntime.sh).
const doctorORTVersion = "1.30.0"

// Check statuses of `pipeline doctor`: a problem fails the command (exit 1), a warning does not.
const (
	statusOK      = "ok"
	statusWarn    = "warn"
	statusProblem = "problem"
)

// doctorOptions are the flags of `pipeline doctor`.
type doctorOptions struct {
	onnxruntime string
	jsonOut     bool
}

func (o *doctorOptions) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.onnxruntime, "onnxruntime", "", "path of libonnxruntime.so to check (default $ONNXRUNTIME_SHARED_LIBRARY_PATH, then .deps/onnxruntime)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the checks as JSON")
}

// doctorCheck is the outcome of one check: what was found and, for a problem or a warning, the
// one thing to do about it.
type doctorCheck struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, warn or problem
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// errDoctor is returned when a check found a problem (exit code 1).
var errDoctor = errors.New("doctor: problems found")

func cmdDoctor(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var o doctorOptions
	fs := newFlagSet("pipeline doctor", stderr, "usage: pipeline doctor [--onnxruntime FILE] [--json]\n\n"+
		"Checks the onnxruntime library, ../shared data, the default backbone's checksum, the CPU and Go.\n"+
		"One line per check: ok, warn (works, with a suggestion) or problem (with the fix). Exit code 1 if\n"+
		"any check is a problem.\n\n")
	o.addFlags(fs)
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	checks := runDoctor(o, backbone.CPU())
	if o.jsonOut {
		if err := writeJSON(stdout, checks); err != nil {
			return err
		}
	} else {
		printDoctor(stdout, checks)
	}
	problems := 0
	for _, c := range checks {
		if c.Status == statusProblem {
			problems++
		}
	}
	if problems > 0 {
		return fmt.Errorf("%w: %d of %d checks failed", errDoctor, problems, len(checks))
	}
	return nil
}

func printDoctor(w io.Writer, checks []doctorCheck) {
	for _, c := range checks {
		line := fmt.Sprintf("%-7s %s: %s", c.Status, c.Name, c.Detail)
		if c.Fix != "" {
			line += " -> fix: " + c.Fix
		}
		fmt.Fprintln(w, line)
	}
}

// runDoctor runs every check, in order: the onnxruntime library, whether it loads, the shared
// data, the default backbone, the CPU, Go.
func runDoctor(o doctorOptions, cpu backbone.CPUInfo) []doctorCheck {
	var checks []doctorCheck
	lib := doctorLibrary(o.onnxruntime)
	checks = append(checks, lib)
	if lib.Status == statusOK {
		checks = append(checks, doctorORTLoads(ort.LibraryPath(o.onnxruntime)))
	}
	checks = append(checks, doctorShared(config.SharedDir()))
	checks = append(checks, doctorBackbone(config.DefaultConfig().Backbone.Path))
	checks = append(checks, doctorCPU(cpu))
	checks = append(checks, doctorJPEG(data.JPEGDecoder()))
	checks = append(checks, doctorCheck{Name: "go", Status: statusOK,
		Detail: fmt.Sprintf("built with %s for %s/%s (cgo)", runtime.Version(), runtime.GOOS, runtime.GOARCH)})
	return checks
}

// doctorLibrary finds the onnxruntime library as ort.LibraryPath does and says where from.
func doctorLibrary(flagValue string) doctorCheck {
	c := doctorCheck{Name: "onnxruntime library"}
	path := ort.LibraryPath(flagValue)
	var from, fix string
	switch {
	case flagValue != "":
		from, fix = "--onnxruntime", "pass --onnxruntime the path of libonnxruntime.so.1, or drop the flag after `make ort`"
	case os.Getenv(ort.EnvVar) != "":
		from, fix = "$"+ort.EnvVar, "point "+ort.EnvVar+" at libonnxruntime.so.1, or unset it and run `make ort`"
	default:
		from, fix = "found above the current or executable directory", "run `make ort` in the repository (installs onnxruntime "+doctorORTVersion+" into "+ort.DefaultRelPath+")"
	}
	if path == "" {
		c.Status, c.Fix = statusProblem, fix
		c.Detail = fmt.Sprintf("not found (no --onnxruntime, no $%s, no %s above the current or executable directory)", ort.EnvVar, ort.DefaultRelPath)
		return c
	}
	abs, _ := filepath.Abs(path)
	st, err := os.Stat(path)
	switch {
	case err != nil:
		c.Status, c.Fix, c.Detail = statusProblem, fix, fmt.Sprintf("%s (%s) does not exist", abs, from)
	case st.IsDir():
		c.Status, c.Fix, c.Detail = statusProblem, fix, fmt.Sprintf("%s (%s) is a folder, not the library file", abs, from)
	default:
		c.Status, c.Detail = statusOK, fmt.Sprintf("%s (%s)", abs, from)
	}
	return c
}

// doctorORTLoads initializes onnxruntime from path and reports its version.
func doctorORTLoads(path string) doctorCheck {
	c := doctorCheck{Name: "onnxruntime loads"}
	if err := ort.Init(path); err != nil {
		c.Status, c.Detail = statusProblem, err.Error()
		c.Fix = "reinstall it: delete " + ort.DefaultRelPath + " and run `make ort` (or point " + ort.EnvVar + " at a working onnxruntime " + doctorORTVersion + ")"
		return c
	}
	v := ort.Version()
	c.Status, c.Detail = statusOK, "version "+v
	if v != doctorORTVersion {
		c.Status = statusWarn
		c.Detail = fmt.Sprintf("version %s, but the project is tested with %s", v, doctorORTVersion)
		c.Fix = "run `make ort` and unset " + ort.EnvVar + " to use the pinned version"
	}
	return c
}

// doctorShared checks the shared data folder and its CUB-100 manifest.
func doctorShared(dir string) doctorCheck {
	c := doctorCheck{Name: "shared data"}
	abs, _ := filepath.Abs(dir)
	from := "../shared"
	if os.Getenv("PIPELINE_SHARED_DIR") != "" {
		from = "$PIPELINE_SHARED_DIR"
	}
	fix := "set PIPELINE_SHARED_DIR to the folder holding data/cub100 and models/ (default: ../shared beside the repository, run from the repository root)"
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		c.Status, c.Fix, c.Detail = statusProblem, fix, fmt.Sprintf("%s (%s) is not a folder", abs, from)
		return c
	}
	manifest := filepath.Join(dir, "data", "cub100", "manifest.csv")
	b, err := os.ReadFile(manifest)
	if err != nil {
		c.Status, c.Fix = statusProblem, fix
		c.Detail = fmt.Sprintf("%s (%s) has no data/cub100/manifest.csv: %v", abs, from, errors.Unwrap(err))
		return c
	}
	images := bytes.Count(bytes.TrimSpace(b), []byte("\n")) // lines after the header
	c.Status, c.Detail = statusOK, fmt.Sprintf("%s (%s): data/cub100 lists %d images", abs, from, images)
	return c
}

// doctorBackbone checks that the default backbone exists and matches its SHA256SUMS entry.
func doctorBackbone(path string) doctorCheck {
	c := doctorCheck{Name: "default backbone"}
	abs, _ := filepath.Abs(path)
	sums := filepath.Join(filepath.Dir(path), "SHA256SUMS")
	f, err := os.Open(path)
	if err != nil {
		c.Status, c.Detail = statusProblem, fmt.Sprintf("%s: %v", abs, errors.Unwrap(err))
		c.Fix = "set PIPELINE_SHARED_DIR to the shared folder holding models/" + filepath.Base(path)
		return c
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		c.Status, c.Detail = statusProblem, fmt.Sprintf("%s: %v", abs, err)
		c.Fix = "restore " + abs + " from the shared data"
		return c
	}
	got := hex.EncodeToString(h.Sum(nil))
	want, err := sha256Entry(sums, filepath.Base(path))
	switch {
	case err != nil:
		c.Status, c.Detail = statusWarn, fmt.Sprintf("%s (sha256 %s) cannot be verified: %v", abs, got, err)
		c.Fix = "restore " + sums + " from the shared data"
	case got != want:
		c.Status, c.Detail = statusProblem, fmt.Sprintf("%s has sha256 %s, but SHA256SUMS says %s (damaged or another version)", abs, got, want)
		c.Fix = "restore " + filepath.Base(path) + " from the shared data (ONNX Model Zoo mobilenetv2-12-int8)"
	default:
		c.Status, c.Detail = statusOK, fmt.Sprintf("%s, sha256 matches SHA256SUMS", abs)
	}
	return c
}

// sha256Entry returns the hex digest listed for name in a sha256sum-format file.
func sha256Entry(sums, name string) (string, error) {
	f, err := os.Open(sums)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && strings.TrimPrefix(fields[1], "*") == name {
			return strings.ToLower(fields[0]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s has no entry for %q", sums, name)
}

// doctorJPEG reports the JPEG decoder the binary was built with; Go's fallback works but makes
// extraction several times slower.
func doctorJPEG(decoder string) doctorCheck {
	c := doctorCheck{Name: "jpeg decoder", Status: statusOK, Detail: decoder + " (pixels as PIL decodes them)"}
	if !strings.HasPrefix(decoder, "libjpeg-turbo") {
		c.Status = statusWarn
		c.Detail = decoder + ": Go's image/jpeg (built with -tags nolibjpeg or without cgo): decoding is about 6x slower, pixels within 3/255 of PIL's"
		c.Fix = "install libjpeg-turbo's headers (`sudo apt-get install libjpeg62-turbo-dev`) and rebuild with `make build`"
	}
	return c
}

// doctorCPU reports the processor and the SIMD extensions onnxruntime's kernels use.
func doctorCPU(cpu backbone.CPUInfo) doctorCheck {
	c := doctorCheck{Name: "cpu", Status: statusOK, Detail: cpuLine(cpu)}
	switch {
	case !cpu.X86:
	case !cpu.AVX2:
		c.Status = statusWarn
		c.Detail += ": onnxruntime falls back to slower kernels and the int8 default backbone loses accuracy"
		c.Fix = "run on an x86 CPU with AVX2 and VNNI (AVX512-VNNI or AVX-VNNI), or use a float32 backbone (--backbone)"
	case !cpu.VNNI():
		c.Status = statusWarn
		c.Detail += ": int8 (QLinear*) kernels saturate int16 sums without VNNI, about 6 Recall@1 points lost with the int8 default backbone"
		c.Fix = "use a float32 backbone (--backbone), or a CPU with AVX512-VNNI or AVX-VNNI"
	}
	return c
}
