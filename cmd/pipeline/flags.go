package main

// The helpers every subcommand uses: its flag set and the shared flags, JSON output, logging,
// and the mapping of errors to the exit codes documented in main.go.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/internal/atomicfile"
	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/train"
)

// newFlagSet returns the flag set of a subcommand: errors and -h go to stderr, -h prints usage
// and then the flags' defaults.
func newFlagSet(name string, stderr io.Writer, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses the arguments of a subcommand that takes flags only. help reports -h (the
// command then returns nil); a bad flag or a positional argument is an errUsage error (exit 2),
// with hint appended to the latter.
func parseFlags(fs *flag.FlagSet, args []string, hint string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return true, nil
		}
		return false, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("%w: unexpected argument %q%s", errUsage, fs.Arg(0), hint)
	}
	return false, nil
}

// parseInterspersed parses flags that may come before, between or after positional arguments
// (`inspect MODEL --json`) and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// hasFlag reports whether args hold the flag name as -name, --name, -name=... or --name=...
// (before a lone "--", which ends the flags).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// onnxruntimeFlag defines --onnxruntime, the path of the onnxruntime library, as every command
// that runs a model takes it.
func onnxruntimeFlag(fs *flag.FlagSet, dst *string) {
	fs.StringVar(dst, "onnxruntime", "", "path of libonnxruntime.so (default $ONNXRUNTIME_SHARED_LIBRARY_PATH, then .deps/onnxruntime)")
}

// threadsFlag defines --threads, onnxruntime's intra-op threads, for the commands that leave the
// choice to onnxruntime by default.
func threadsFlag(fs *flag.FlagSet, dst *int) {
	fs.IntVar(dst, "threads", 0, "onnxruntime intra-op threads (0: onnxruntime decides)")
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// writeJSON writes v to w as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeJSONReport writes v as indented JSON to stdout when out is "", else atomically to the file
// out (creating its folder) and says so on stderr; errors are prefixed with cmd.
func writeJSONReport(cmd, out string, v any, stdout, stderr io.Writer) error {
	if out == "" {
		return writeJSON(stdout, v)
	}
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if err := atomicfile.WriteBytes(out, "JSON summary", append(js, '\n')); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	fmt.Fprintf(stderr, "%s: wrote %s\n", cmd, out)
	return nil
}

// textLogger returns a text logger on stderr at level, or at verboseLevel with -v.
func textLogger(stderr io.Writer, verbose bool, level, verboseLevel slog.Level) *slog.Logger {
	if verbose {
		level = verboseLevel
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// batchOutput is the logging of a command that runs many trainings (compare, tune): warnings only
// on stderr unless verbose, and its progress lines on stdout, or on stderr when stdout gets JSON.
func batchOutput(stdout, stderr io.Writer, verbose, jsonOut bool) (*slog.Logger, io.Writer) {
	lines := stdout
	if jsonOut {
		lines = stderr
	}
	return textLogger(stderr, verbose, slog.LevelWarn, slog.LevelInfo), lines
}

// errUsage marks errors that are the caller's fault (exit code 2).
var errUsage = errors.New("usage")

// exitCode maps an error to the documented exit codes, in one place.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "error:", err)
	if h := pipeline.Hint(err); h != "" {
		fmt.Fprintln(stderr, "hint:", h)
	}
	switch {
	case errors.Is(err, errUsage), errors.Is(err, config.ErrInvalid):
		return 2
	case errors.Is(err, train.ErrNonFinite), errors.Is(err, head.ErrNonFinite):
		return 3
	case errors.Is(err, context.Canceled):
		return 130
	default:
		return 1
	}
}
