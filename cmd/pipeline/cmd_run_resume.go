package main

import (
	"flag"
	"fmt"
	"strings"
)

// checkResumeFlags refuses flags beside --resume other than -v and --json: a resumed run takes
// everything else from the run folder's config.yaml, so that it ends as the interrupted run would
// have.
func checkResumeFlags(fs *flag.FlagSet, resume string) error {
	if resume == "" {
		return nil
	}
	var extra []string
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "resume", "v", "json":
		default:
			extra = append(extra, "--"+f.Name)
		}
	})
	if len(extra) > 0 {
		return fmt.Errorf("%w: --resume takes the config from %s/config.yaml; %s cannot be changed when resuming (only -v and --json may be added)",
			errUsage, strings.TrimRight(resume, "/"), strings.Join(extra, ", "))
	}
	return nil
}
