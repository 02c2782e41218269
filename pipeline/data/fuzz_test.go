package data

import (
	"bytes"
	"encoding/csv"
	"errors"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseManifest feeds arbitrary text to the CSV manifest parser. Properties: no panic; an
// error is a *ManifestError naming the file; an accepted manifest has items whose labels index
// Classes, whose Class matches, whose resolved paths are unique and whose lines increase; and it
// round-trips: written back as a canonical path,label,split manifest and parsed again, it gives
// the same classes and items. Seeds in testdata/fuzz/FuzzParseManifest.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte("path,label\na.jpg,0\nb.jpg,1\n"))
	const name = "/data/set/manifest.csv"
	f.Fuzz(func(t *testing.T, in []byte) {
		ds, err := ParseManifest(bytes.NewReader(in), name)
		if err != nil {
			var me *ManifestError
			if !errors.As(err, &me) || me.Path != name || !strings.Contains(err.Error(), strconv.Quote(name)) {
				t.Fatalf("error %v is not a *ManifestError naming the file", err)
			}
			return
		}
		if len(ds.Items) == 0 || ds.Source != name || ds.Root != filepath.Dir(name) {
			t.Fatalf("dataset %+v", ds)
		}
		seen := map[string]bool{}
		for i, it := range ds.Items {
			if it.Label < 0 || it.Label >= len(ds.Classes) || ds.Classes[it.Label] != it.Class {
				t.Fatalf("item %d: label %d class %q of %d classes", i, it.Label, it.Class, len(ds.Classes))
			}
			if i > 0 && it.Line <= ds.Items[i-1].Line {
				t.Fatalf("item %d: line %d after %d", i, it.Line, ds.Items[i-1].Line)
			}
			if k := ds.Resolve(i); seen[k] {
				t.Fatalf("duplicate path %q accepted", k)
			} else {
				seen[k] = true
			}
		}
		// Round trip through a canonical manifest.
		numeric := true
		for _, c := range ds.Classes {
			if _, err := strconv.Atoi(c); err != nil {
				numeric = false
			}
		}
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		w.Write([]string{"path", "label", "split"})
		for _, it := range ds.Items {
			label := it.Class
			if numeric {
				label = strconv.Itoa(it.Label)
			}
			w.Write([]string{filepath.ToSlash(it.Path), label, it.Split})
		}
		w.Flush()
		again, err := ParseManifest(&b, name)
		if err != nil {
			t.Fatalf("canonical form of an accepted manifest refused: %v\n%s", err, b.String())
		}
		if !reflect.DeepEqual(ds.Classes, again.Classes) || len(ds.Items) != len(again.Items) {
			t.Fatalf("round trip changed the classes: %q -> %q", ds.Classes, again.Classes)
		}
		for i := range ds.Items {
			a, b := ds.Items[i], again.Items[i]
			a.Line, b.Line = 0, 0
			if a != b {
				t.Fatalf("round trip changed item %d: %+v -> %+v", i, a, b)
			}
		}
	})
}
