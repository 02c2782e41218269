package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// apiError is an error answered to the client: its status and a message naming the problem.
// The body is {"error": message}, the Open Inference Protocol's error form.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// badRequest and friends make apiErrors.
func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func tooLarge(format string, args ...any) error {
	return &apiError{http.StatusRequestEntityTooLarge, fmt.Sprintf(format, args...)}
}

// retryAfter is the Retry-After (seconds) of 503 answers: about a batch's run time rounded up.
const retryAfter = 1

// writeError answers err as JSON: apiErrors with their status, overload as 503 with Retry-After,
// a body over the cap as 413, anything else as 500.
func writeError(w http.ResponseWriter, err error) int {
	var ae *apiError
	var mb *http.MaxBytesError
	status, msg := http.StatusInternalServerError, err.Error()
	switch {
	case errors.As(err, &ae):
		status = ae.status
	case errors.Is(err, errOverloaded):
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	case errors.As(err, &mb):
		status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over the cap of %d bytes", mb.Limit)
	}
	writeJSON(w, status, map[string]string{"error": msg})
	return status
}

// writeJSON answers v as JSON with the status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		// Only non-finite floats fail to encode: a model output NaN or Inf.
		b = []byte(`{"error":"serve: the answer holds a value JSON cannot encode (NaN or Inf in the model output?)"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
