package pipeline

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/grouploss/pipeline/pipeline/data"
)

// Integer labels take the name of the folder their images share; names and mixed folders stay.
func TestClassNames(t *testing.T) {
	ds := &data.Dataset{Classes: []string{"0", "1", "2", "gull"}, Items: []data.Item{
		{Path: filepath.Join("images", "Black_footed_Albatross", "a.jpg"), Label: 0},
		{Path: filepath.Join("images", "Black_footed_Albatross", "b.jpg"), Label: 0},
		{Path: filepath.Join("x", "c.jpg"), Label: 1}, {Path: filepath.Join("y", "d.jpg"), Label: 1},
		{Path: "e.jpg", Label: 2},
		{Path: filepath.Join("birds", "f.jpg"), Label: 3},
	}}
	if got := fmt.Sprint(classNames(ds)); got != "[Black_footed_Albatross 1 2 gull]" {
		t.Errorf("class names %s", got)
	}
}

func TestScoreName(t *testing.T) {
	for _, c := range []struct {
		val  int
		sel  string
		want string
	}{{10, "map_at_r on validation classes", "validation MAP@R"}, {0, "none (last epoch)", ""}, {10, "none (last epoch)", ""},
		{5, "recall_at_1 on validation classes", "validation R@1"}, {5, "nmi", "nmi"}} {
		s := &Summary{Data: DataSummary{ValidationClasses: c.val}, Training: TrainSummary{Selection: c.sel}}
		if got := scoreName(s); got != c.want {
			t.Errorf("scoreName(%d, %q) = %q, want %q", c.val, c.sel, got, c.want)
		}
	}
}
