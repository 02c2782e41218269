package pipeline

import "github.com/grouploss/pipeline/internal/hint"

// withHint attaches hint to err (nil stays nil).
func withHint(err error, h string) error { return hint.With(err, h) }

// Hint returns the suggestion of what to do attached to an error returned by Run, LoadConfig or
// infer.OpenEmbedder, or "" when there is none (the error's message then says what to do, or
// there is nothing to do).
func Hint(err error) string { return hint.Of(err) }
