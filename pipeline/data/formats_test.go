package data

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The CUB lists of the shared CUB-100 subset agree with its manifest.csv item for item (path,
// label, order), name the classes from classes.txt and split by train_test_split.txt; Load still
// reads the manifest, so existing feature caches (keyed by Source and Fingerprint) stay valid.
func TestLoadCUBShared(t *testing.T) {
	root := cub100(t)
	cub, err := LoadCUB(root)
	if err != nil {
		t.Fatal(err)
	}
	man, err := LoadManifest(filepath.Join(root, "manifest.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cub.Items) != 5902 || len(cub.Classes) != 100 {
		t.Fatalf("LoadCUB: %d items, %d classes; want 5902, 100", len(cub.Items), len(cub.Classes))
	}
	if len(man.Items) != len(cub.Items) {
		t.Fatalf("manifest has %d items, CUB lists %d", len(man.Items), len(cub.Items))
	}
	for i := range man.Items {
		m, c := man.Items[i], cub.Items[i]
		if m.Path != c.Path || m.Label != c.Label {
			t.Fatalf("item %d: manifest %q label %d, CUB lists %q label %d", i, m.Path, m.Label, c.Path, c.Label)
		}
		if cub.Resolve(i) != man.Resolve(i) {
			t.Fatalf("item %d resolves to %q, manifest to %q", i, cub.Resolve(i), man.Resolve(i))
		}
	}
	if cub.Classes[0] != "Black_footed_Albatross" || cub.Classes[99] != "Common_Yellowthroat" {
		t.Errorf("classes %q ... %q", cub.Classes[0], cub.Classes[99])
	}
	if it := cub.Items[0]; it.Class != "Black_footed_Albatross" || it.Line != 1 || cub.Source != filepath.Join(root, "images.txt") {
		t.Errorf("first item %+v, source %q", it, cub.Source)
	}
	train := len(cub.Select(func(it Item) bool { return it.Split == "train" }))
	test := len(cub.Select(func(it Item) bool { return it.Split == "test" }))
	// The format's flag is "is training?" (1 train). The subset's file flags 2903 images with 1,
	// while its README counts 2999 training images (and official CUB has ~30 training images per
	// class, here the 0 side): the subset's flags look inverted. Split follows the format.
	if train != 2903 || test != 2999 {
		t.Errorf("train_test_split: %d train, %d test; want 2903, 2999 (the file's flags 1 and 0)", train, test)
	}
	for _, i := range []int{0, 2950, len(cub.Items) - 1} {
		if _, err := os.Stat(cub.Resolve(i)); err != nil {
			t.Errorf("item %d: %v", i, err)
		}
	}

	ds, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Source != filepath.Join(root, "manifest.csv") || ds.Fingerprint() != man.Fingerprint() || !slices.Equal(ds.Classes, man.Classes) {
		t.Errorf("Load(cub100) source %q fingerprint %s, want the manifest's (%s)", ds.Source, ds.Fingerprint(), man.Fingerprint())
	}
}

// The official CUB-200-2011 layout: 1-based ids separated by spaces, class names like
// "001.Black_footed_Albatross", a classes.txt not in id order.
func TestLoadCUBOfficial(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "images.txt"),
		"1 001.Albatross/a_1.jpg\n2 001.Albatross/a_2.jpg\n\n3 200.Wren/w_1.jpg\n4 017.Cardinal/c 1.jpg\n")
	writeFile(t, filepath.Join(root, "image_class_labels.txt"), "1 1\n3 200\n2 1\n4 17\n")
	writeFile(t, filepath.Join(root, "classes.txt"), "200 200.Wren\n1 001.Albatross\n17 017.Cardinal\n5 005.Unused\n")
	writeFile(t, filepath.Join(root, "train_test_split.txt"), "1 1\n2 0\n3 0\n4 1\n")
	for _, load := range []struct {
		name string
		f    func(string) (*Dataset, error)
	}{{"LoadCUB", LoadCUB}, {"Load", Load}} {
		ds, err := load.f(root)
		if err != nil {
			t.Fatalf("%s: %v", load.name, err)
		}
		if want := []string{"001.Albatross", "005.Unused", "017.Cardinal", "200.Wren"}; !slices.Equal(ds.Classes, want) {
			t.Errorf("%s: classes %q, want %q", load.name, ds.Classes, want)
		}
		want := []Item{
			{Path: filepath.Join("images", "001.Albatross", "a_1.jpg"), Label: 0, Class: "001.Albatross", Split: "train", Line: 1},
			{Path: filepath.Join("images", "001.Albatross", "a_2.jpg"), Label: 0, Class: "001.Albatross", Split: "test", Line: 2},
			{Path: filepath.Join("images", "200.Wren", "w_1.jpg"), Label: 3, Class: "200.Wren", Split: "test", Line: 4},
			{Path: filepath.Join("images", "017.Cardinal", "c 1.jpg"), Label: 2, Class: "017.Cardinal", Split: "train", Line: 5},
		}
		if !slices.Equal(ds.Items, want) {
			t.Errorf("%s: items\n%+v\nwant\n%+v", load.name, ds.Items, want)
		}
		if c := ds.ClassCounts(); !slices.Equal(c, []int{2, 0, 1, 1}) {
			t.Errorf("%s: class counts %v", load.name, c)
		}
	}
	// Without classes.txt and train_test_split.txt: classes are the labelled ids, no split.
	os.Remove(filepath.Join(root, "classes.txt"))
	os.Remove(filepath.Join(root, "train_test_split.txt"))
	ds, err := LoadCUB(root)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ds.Classes, []string{"1", "17", "200"}) || !slices.Equal(ds.Labels([]int{0, 1, 2, 3}), []int{0, 0, 2, 1}) || ds.Items[0].Split != "" {
		t.Errorf("without classes.txt: classes %q, labels %v, split %q", ds.Classes, ds.Labels([]int{0, 1, 2, 3}), ds.Items[0].Split)
	}
	// A folder with manifest.csv and the CUB lists loads the manifest.
	writeFile(t, filepath.Join(root, "manifest.csv"), "path,label\nimages/001.Albatross/a_1.jpg,4\n")
	if ds, err := Load(root); err != nil || len(ds.Items) != 1 || ds.Items[0].Label != 4 {
		t.Errorf("Load(manifest + CUB lists) = %+v, %v; want the manifest", ds, err)
	}
}

func TestLoadCUBErrors(t *testing.T) {
	good := map[string]string{
		"images.txt":             "0, a/0.jpg\n1, a/1.jpg\n2, b/2.jpg\n",
		"image_class_labels.txt": "0, 0\n1, 0\n2, 1\n",
		"classes.txt":            "0, a\n1, b\n",
		"train_test_split.txt":   "0, 1\n1, 1\n2, 0\n",
	}
	cases := []struct {
		name, file, content, want string
		line                      int
		at                        string // the file the error names, when not file
	}{
		{"bad image id", "images.txt", "0, a/0.jpg\nx, a/1.jpg\n2, b/2.jpg\n", `bad id "x"`, 2, ""},
		{"one field", "images.txt", "0, a/0.jpg\n1\n2, b/2.jpg\n", "want two fields", 2, ""},
		{"repeated image id", "images.txt", "0, a/0.jpg\n0, a/1.jpg\n2, b/2.jpg\n", "id 0 repeated (first at line 1)", 2, ""},
		{"duplicate path", "images.txt", "0, a/0.jpg\n1, a/../a/0.jpg\n2, b/2.jpg\n", `duplicate path "a/../a/0.jpg" (first at line 1)`, 2, ""},
		{"path outside images", "images.txt", "0, a/0.jpg\n1, ../x.jpg\n2, b/2.jpg\n", "must be relative", 2, ""},
		{"image without class", "image_class_labels.txt", "0, 0\n2, 1\n", "image id 1 has no class", 2, "images.txt"},
		{"label of unknown image", "image_class_labels.txt", "0, 0\n1, 0\n2, 1\n9, 1\n", "image id 9 is not in", 4, ""},
		{"bad class id", "image_class_labels.txt", "0, 0\n1, zero\n2, 1\n", `bad class id "zero"`, 2, ""},
		{"class not in classes.txt", "image_class_labels.txt", "0, 0\n1, 0\n2, 7\n", "class id 7 is not in", 3, ""},
		{"bad split flag", "train_test_split.txt", "0, 1\n1, yes\n2, 0\n", `bad flag "yes"`, 2, ""},
		{"image missing from split", "train_test_split.txt", "0, 1\n1, 1\n", "image id 2 is not in", 3, "images.txt"},
		{"empty classes", "classes.txt", "\n", "no lines", 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range good {
				writeFile(t, filepath.Join(root, name), content)
			}
			if _, err := LoadCUB(root); err != nil {
				t.Fatalf("good lists: %v", err)
			}
			writeFile(t, filepath.Join(root, c.file), c.content)
			_, err := Load(root)
			var le *ListError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want a *ListError", err)
			}
			if le.Format != FormatCUB || le.Line != c.line || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "data: ") {
				t.Errorf("err = %q (line %d), want %q at line %d", err, le.Line, c.want, c.line)
			}
			if c.line > 0 && !strings.Contains(err.Error(), "line") {
				t.Errorf("err = %q does not name the line", err)
			}
			at := c.file
			if c.at != "" {
				at = c.at
			}
			if le.Path != filepath.Join(root, at) || !strings.Contains(err.Error(), le.Path) {
				t.Errorf("err = %q names %q, want %q", err, le.Path, filepath.Join(root, at))
			}
		})
	}
	if _, err := LoadCUB(t.TempDir()); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "images.txt") {
		t.Errorf("missing lists: err = %v, want ErrNotExist naming images.txt", err)
	}
}

func TestLoadCars196(t *testing.T) {
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "cars_annos.csv")
	writeFile(t, csvPath, "relative_im_path,bbox_x1,bbox_y1,bbox_x2,bbox_y2,class,test\n"+
		"car_ims/000001.jpg,112,7,853,717,1,0\n"+
		"car_ims/000002.jpg,48,24,441,202,196,1\n"+
		"\n"+
		"car_ims/000003.jpg,7,4,277,180,98,0\n")
	txtPath := filepath.Join(dir, "cars.txt")
	writeFile(t, txtPath, "# relative path, class id, test flag\ncar_ims/000001.jpg 1 0\ncar_ims/000002.jpg\t196 1\n\ncar_ims/000003.jpg 98 0\n")
	for _, c := range []struct {
		path  string
		lines []int
	}{{csvPath, []int{2, 3, 5}}, {txtPath, []int{2, 3, 5}}} {
		ds, err := LoadCars196(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ds.Classes, []string{"1", "98", "196"}) || ds.Root != dir || ds.Source != c.path {
			t.Errorf("%s: classes %q root %q source %q", c.path, ds.Classes, ds.Root, ds.Source)
		}
		want := []Item{
			{Path: filepath.Join("car_ims", "000001.jpg"), Label: 0, Class: "1", Split: "train", Line: c.lines[0]},
			{Path: filepath.Join("car_ims", "000002.jpg"), Label: 2, Class: "196", Split: "test", Line: c.lines[1]},
			{Path: filepath.Join("car_ims", "000003.jpg"), Label: 1, Class: "98", Split: "train", Line: c.lines[2]},
		}
		if !slices.Equal(ds.Items, want) {
			t.Errorf("%s: items\n%+v\nwant\n%+v", c.path, ds.Items, want)
		}
	}
	// Two-column lists (no split), class ids from 0, and Load on a folder holding cars_annos.csv.
	writeFile(t, txtPath, "a.jpg 0\nb.jpg 3\n")
	if ds, err := LoadCars196(txtPath); err != nil || !slices.Equal(ds.Labels([]int{0, 1}), []int{0, 1}) || ds.Items[0].Split != "" {
		t.Errorf("two columns: %+v, %v", ds, err)
	}
	if ds, err := Load(dir); err != nil || ds.Source != csvPath {
		t.Errorf("Load(folder with cars_annos.csv) = %+v, %v", ds, err)
	}

	bad := []struct {
		name, file, content, want string
		line                      int
	}{
		{"csv without class", "a.csv", "relative_im_path,test\nx.jpg,0\n", "lacks a relative_im_path", 1},
		{"csv field count", "b.csv", "path,class\nx.jpg,1\ny.jpg\n", "1 fields, want 2", 3},
		{"csv bad class", "c.csv", "path,class\nx.jpg,1\ny.jpg,two\n", `bad class "two"`, 3},
		{"csv bad test", "d.csv", "path,class,test\nx.jpg,1,maybe\n", `bad test flag "maybe"`, 2},
		{"csv duplicate", "e.csv", "path,class\nx.jpg,1\n./x.jpg,2\n", `duplicate path "./x.jpg" (first at line 2)`, 3},
		{"csv empty", "f.csv", "", "empty file", 0},
		{"csv header only", "g.csv", "path,class\n", "no images", 0},
		{"txt fields", "h.txt", "x.jpg 1\ny.jpg 1 0 extra\n", "4 fields", 2},
		{"txt bad class", "i.txt", "x.jpg one\n", `bad class "one"`, 1},
		{"txt empty", "j.txt", "# only a comment\n", "no images", 0},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.file)
			writeFile(t, p, c.content)
			_, err := LoadCars196(p)
			var le *ListError
			if !errors.As(err, &le) || le.Format != FormatCars || le.Path != p || le.Line != c.line || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want a Cars196 *ListError for %q line %d containing %q", err, p, c.line, c.want)
			}
		})
	}
}

func TestLoadSOP(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "Ebay_train.txt"), "image_id class_id super_class_id path\n"+
		"1 1 1 bicycle_final/111085122871_0.JPG\n2 1 1 bicycle_final/111085122871_1.JPG\n3 2 1 bicycle_final/111265328556_0.JPG\n")
	writeFile(t, filepath.Join(root, "Ebay_test.txt"), "image_id class_id super_class_id path\n"+
		"4 11319 1 bicycle_final/222_0.JPG\n5 11318 2 cabinet_final/333_0.JPG\n")
	for _, load := range []func(string) (*Dataset, error){LoadSOP, Load} {
		ds, err := load(root)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ds.Classes, []string{"1", "2", "11318", "11319"}) || ds.Source != root || ds.Root != root {
			t.Errorf("classes %q source %q root %q", ds.Classes, ds.Source, ds.Root)
		}
		want := []Item{
			{Path: filepath.Join("bicycle_final", "111085122871_0.JPG"), Label: 0, Class: "1", Split: "train", Line: 2},
			{Path: filepath.Join("bicycle_final", "111085122871_1.JPG"), Label: 0, Class: "1", Split: "train", Line: 3},
			{Path: filepath.Join("bicycle_final", "111265328556_0.JPG"), Label: 1, Class: "2", Split: "train", Line: 4},
			{Path: filepath.Join("bicycle_final", "222_0.JPG"), Label: 3, Class: "11319", Split: "test", Line: 2},
			{Path: filepath.Join("cabinet_final", "333_0.JPG"), Label: 2, Class: "11318", Split: "test", Line: 3},
		}
		if !slices.Equal(ds.Items, want) {
			t.Errorf("items\n%+v\nwant\n%+v", ds.Items, want)
		}
	}
	// Only the test list.
	os.Remove(filepath.Join(root, "Ebay_train.txt"))
	if ds, err := Load(root); err != nil || len(ds.Items) != 2 || ds.Items[0].Split != "test" || ds.Items[0].Label != 1 {
		t.Errorf("test list only: %+v, %v", ds, err)
	}
	if _, err := LoadSOP(t.TempDir()); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "Ebay_train.txt") {
		t.Errorf("no lists: err = %v, want ErrNotExist naming Ebay_train.txt", err)
	}

	const hdr = "image_id class_id super_class_id path\n"
	bad := []struct {
		name, train, test, want, file string
		line                          int
	}{
		{"bad header", "id class path\n1 1 1 a.jpg\n", "", "header", "Ebay_train.txt", 1},
		{"field count", hdr + "1 1 1 a.jpg\n2 1 b.jpg\n", "", "3 fields, want 4", "Ebay_train.txt", 3},
		{"bad class id", hdr + "1 x 1 a.jpg\n", "", `bad class_id "x"`, "Ebay_train.txt", 2},
		{"header only", hdr, "", "no images", "Ebay_train.txt", 0},
		{"duplicate across lists", hdr + "1 1 1 a/b.jpg\n", hdr + "\n2 9 1 a/./b.jpg\n", `duplicate path "a/./b.jpg" (first at line 2 of`, "Ebay_test.txt", 3},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "Ebay_train.txt"), c.train)
			if c.test != "" {
				writeFile(t, filepath.Join(dir, "Ebay_test.txt"), c.test)
			}
			_, err := LoadSOP(dir)
			var le *ListError
			p := filepath.Join(dir, c.file)
			if !errors.As(err, &le) || le.Format != FormatSOP || le.Path != p || le.Line != c.line || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want a SOP *ListError for %q line %d containing %q", err, p, c.line, c.want)
			}
		})
	}
}
