package data

import (
	"errors"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadImageFolder(t *testing.T) {
	root := t.TempDir()
	red := uniform(4, 4, color.NRGBA{255, 0, 0, 255})
	writeImage(t, filepath.Join(root, "zebra", "b.png"), red)
	writeImage(t, filepath.Join(root, "zebra", "a.JPG"), red)
	writeImage(t, filepath.Join(root, "ant", "x.jpeg"), red)
	writeImage(t, filepath.Join(root, "ant", ".hidden.png"), red)
	writeFile(t, filepath.Join(root, "ant", "notes.txt"), "not an image")
	writeImage(t, filepath.Join(root, "ant", "deeper", "y.png"), red)
	writeImage(t, filepath.Join(root, ".git", "z.png"), red)
	writeFile(t, filepath.Join(root, "README.png"), "a file at the top is not a class")

	ds, err := LoadImageFolder(root)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"ant", "zebra"}; !slices.Equal(ds.Classes, want) {
		t.Fatalf("classes %q, want %q", ds.Classes, want)
	}
	var got []string
	for i, it := range ds.Items {
		got = append(got, filepath.ToSlash(it.Path))
		if ds.Classes[it.Label] != it.Class {
			t.Errorf("item %d: label %d but class %q", i, it.Label, it.Class)
		}
		if _, err := os.Stat(ds.Resolve(i)); err != nil {
			t.Errorf("item %d does not resolve: %v", i, err)
		}
	}
	if want := []string{"ant/x.jpeg", "zebra/a.JPG", "zebra/b.png"}; !slices.Equal(got, want) {
		t.Fatalf("items %q, want %q", got, want)
	}
	if c := ds.ClassCounts(); !slices.Equal(c, []int{1, 2}) {
		t.Errorf("class counts %v, want [1 2]", c)
	}

	// Load picks the image folder when there is no manifest.csv.
	ds2, err := Load(root)
	if err != nil || len(ds2.Items) != 3 {
		t.Fatalf("Load(folder) = %v items, %v", ds2, err)
	}
}

func TestLoadImageFolderErrors(t *testing.T) {
	empty := t.TempDir()
	if _, err := LoadImageFolder(empty); err == nil || !strings.Contains(err.Error(), "no class folders") {
		t.Errorf("empty folder: err %v, want 'no class folders'", err)
	}
	root := t.TempDir()
	writeImage(t, filepath.Join(root, "a", "1.png"), uniform(2, 2, color.White))
	writeFile(t, filepath.Join(root, "b", "readme.txt"), "x")
	_, err := LoadImageFolder(root)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(root, "b")) {
		t.Errorf("class without images: err %v, want it to name %q", err, filepath.Join(root, "b"))
	}
	if _, err := LoadImageFolder(filepath.Join(root, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing folder: err %v, want ErrNotExist", err)
	}
}

func TestLoadManifest(t *testing.T) {
	dir := t.TempDir()
	t.Run("integer labels, split column, any order", func(t *testing.T) {
		p := filepath.Join(dir, "m1.csv")
		writeFile(t, p, "split,label,path\ntrain,2,img/a.jpg\n\ntest, 0 ,img/b.jpg\ntrain,2,/abs/c.png\n")
		ds, err := LoadManifest(p)
		if err != nil {
			t.Fatal(err)
		}
		if ds.Root != dir || ds.Source != p {
			t.Errorf("root %q source %q", ds.Root, ds.Source)
		}
		if want := []string{"0", "1", "2"}; !slices.Equal(ds.Classes, want) {
			t.Errorf("classes %q, want %q", ds.Classes, want)
		}
		want := []Item{
			{Path: filepath.FromSlash("img/a.jpg"), Label: 2, Class: "2", Split: "train", Line: 2},
			{Path: filepath.FromSlash("img/b.jpg"), Label: 0, Class: "0", Split: "test", Line: 4},
			{Path: filepath.FromSlash("/abs/c.png"), Label: 2, Class: "2", Split: "train", Line: 5},
		}
		if !slices.Equal(ds.Items, want) {
			t.Errorf("items\n%+v\nwant\n%+v", ds.Items, want)
		}
		if got := ds.Resolve(0); got != filepath.Join(dir, "img", "a.jpg") {
			t.Errorf("Resolve(0) = %q", got)
		}
		if got := ds.Resolve(2); got != filepath.FromSlash("/abs/c.png") {
			t.Errorf("Resolve(2) = %q", got)
		}
		if c := ds.ClassCounts(); !slices.Equal(c, []int{1, 0, 2}) {
			t.Errorf("counts %v", c)
		}
		tr, te := ds.Select(func(it Item) bool { return it.Label >= 1 }), ds.Select(func(it Item) bool { return it.Label < 1 })
		if !slices.Equal(tr, []int{0, 2}) || !slices.Equal(te, []int{1}) {
			t.Errorf("Select by label = %v, %v", tr, te)
		}
		if s := ds.Select(func(it Item) bool { return it.Split == "test" }); !slices.Equal(s, []int{1}) {
			t.Errorf("Select(split=test) = %v", s)
		}
	})
	t.Run("name labels get sorted ids", func(t *testing.T) {
		p := filepath.Join(dir, "m2.csv")
		writeFile(t, p, "\ufeffpath,label,width\nx/1.jpg,wren,10\nx/2.jpg,auk,10\nx/3.jpg,wren,10\n")
		ds, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ds.Classes, []string{"auk", "wren"}) {
			t.Errorf("classes %q", ds.Classes)
		}
		if got := ds.Labels([]int{0, 1, 2}); !slices.Equal(got, []int{1, 0, 1}) {
			t.Errorf("labels %v, want [1 0 1]", got)
		}
	})

	bad := []struct {
		name, content, want string
	}{
		{"no header", "a.jpg,1\n", `no "path" column`},
		{"no label column", "path,split\na.jpg,train\n", `no "label" column`},
		{"duplicate column", "path,label,path\na,1,b\n", `names column "path" twice`},
		{"empty", "", "empty file"},
		{"header only", "path,label\n", "no items"},
		{"missing field", "path,label\na.jpg,1\nb.jpg\n", "line 3: missing fields"},
		{"extra field", "path,label\na.jpg,1\nb.jpg,2,3\n", "line 3: extra fields"},
		{"empty path", "path,label\na.jpg,1\n ,2\n", "line 3: empty path"},
		{"empty label", "path,label\na.jpg,\n", "line 2: bad label: empty"},
		{"negative label", "path,label\na.jpg,1\nb.jpg,-1\n", `line 3: bad label "-1"`},
		{"name among integers", "path,label\na.jpg,1\nb.jpg,wren\n", `line 3: bad label "wren"`},
		{"integer among names", "path,label\na.jpg,wren\nb.jpg,3\n", `line 3: bad label "3"`},
		{"duplicate path", "path,label\na.jpg,1\nsub/../a.jpg,2\n", `line 3: duplicate path "sub/../a.jpg" (first at line 2)`},
		{"bad quoting", "path,label\n\"a.jpg,1\n", "line 2"},
	}
	for i, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, "bad"+string(rune('a'+i))+".csv")
			writeFile(t, p, c.content)
			_, err := LoadManifest(p)
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			var me *ManifestError
			if !errors.As(err, &me) || me.Path != p {
				t.Errorf("error %v is not a *ManifestError for %q", err, p)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("error %q, want it to contain %q and the file name", err, c.want)
			}
		})
	}
}

func TestLoadDispatch(t *testing.T) {
	root := t.TempDir()
	writeImage(t, filepath.Join(root, "cls", "a.png"), uniform(2, 2, color.Black))
	writeFile(t, filepath.Join(root, "manifest.csv"), "path,label\ncls/a.png,7\n")
	ds, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Source != filepath.Join(root, "manifest.csv") || ds.Items[0].Label != 7 {
		t.Errorf("Load(folder with manifest.csv) = %+v, want the manifest", ds)
	}
	if _, err := Load(filepath.Join(root, "cls", "a.png")); err == nil {
		t.Error("Load(png file) succeeded, want an error")
	}
}

func TestFingerprint(t *testing.T) {
	a := &Dataset{Classes: []string{"x"}, Items: []Item{{Path: "a", Label: 0}}}
	b := &Dataset{Classes: []string{"x"}, Items: []Item{{Path: "a", Label: 0}}}
	if a.Fingerprint() != b.Fingerprint() {
		t.Fatal("equal datasets differ")
	}
	b.Items[0].Path = "b"
	if a.Fingerprint() == b.Fingerprint() {
		t.Fatal("a changed path kept the fingerprint")
	}
}

func TestLoadCUB100(t *testing.T) {
	root := cub100(t)
	ds, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Items) != 5902 || len(ds.Classes) != 100 {
		t.Fatalf("%d items, %d classes; want 5902, 100", len(ds.Items), len(ds.Classes))
	}
	counts := ds.ClassCounts()
	for l, c := range counts {
		if c == 0 {
			t.Errorf("label %d has no items", l)
		}
	}
	tr, te := ds.Select(func(it Item) bool { return it.Label < 50 }), ds.Select(func(it Item) bool { return it.Label >= 50 })
	if len(tr)+len(te) != 5902 || len(te) != 2953 {
		t.Errorf("split %d/%d, want 2949/2953", len(tr), len(te))
	}
	for _, i := range []int{0, len(ds.Items) - 1} {
		if _, err := os.Stat(ds.Resolve(i)); err != nil {
			t.Errorf("item %d: %v", i, err)
		}
	}
}
