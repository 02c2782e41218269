// Package hint attaches to an error a suggestion of what the user can do about it, printed by
// the command on its own line. Packages below pipeline (infer) and pipeline itself share it, so
// that pipeline.Hint finds the suggestion whichever package made the error.
package hint

import "errors"

// hintError carries a suggestion of what the user can do about err. Its message is err's.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// With attaches the suggestion hint to err (nil stays nil).
func With(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hintError{err: err, hint: hint}
}

// Of returns the suggestion attached to err or to an error it wraps, or "" when there is none.
func Of(err error) string {
	var h *hintError
	if errors.As(err, &h) {
		return h.hint
	}
	return ""
}
