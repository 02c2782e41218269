package pipeline

import "errors"

// hintError carries a suggestion of what the user can do about err. Its message is err's: the
// hint is read with Hint and printed on its own line by the command.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// withHint attaches hint to err (nil stays nil).
func withHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hintError{err: err, hint: hint}
}

// Hint returns the suggestion of what to do attached to an error returned by Run or LoadConfig,
// or "" when there is none (the error's message then says what to do, or there is nothing to do).
func Hint(err error) string {
	var h *hintError
	if errors.As(err, &h) {
		return h.hint
	}
	return ""
}
