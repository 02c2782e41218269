package hint

import (
	"errors"
	"fmt"
	"testing"
)

func TestWithAndOf(t *testing.T) {
	base := errors.New("infer: model has no metadata")
	err := fmt.Errorf("serve: %w", With(base, "export it with `pipeline run`"))
	if got := Of(err); got != "export it with `pipeline run`" {
		t.Errorf("Of = %q through a wrapping error", got)
	}
	if !errors.Is(err, base) || err.Error() != "serve: infer: model has no metadata" {
		t.Errorf("error %q does not keep the message and chain of the original", err)
	}
	if With(nil, "x") != nil || Of(base) != "" || Of(nil) != "" {
		t.Error("nil must stay nil and an error without a hint has none")
	}
}
