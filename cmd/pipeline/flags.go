package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/grouploss/pipeline/internal/atomicfile"
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

// batchOutput is the logging of a command that runs many trainings (compare, tune): warnings only
// on stderr unless verbose, and its progress lines on stdout, or on stderr when stdout gets JSON.
func batchOutput(stdout, stderr io.Writer, verbose, jsonOut bool) (*slog.Logger, io.Writer) {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	lines := stdout
	if jsonOut {
		lines = stderr
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})), lines
}
