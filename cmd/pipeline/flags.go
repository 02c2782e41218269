package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
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
