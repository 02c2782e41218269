package data

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Readers of the standard deep-metric-learning benchmarks' own list formats. Labels are 0-based in
// class-id order (the smallest class id is label 0), whether the ids start at 0 or 1. Item.Split is
// the dataset's own image split where it has one; note that the metric-learning protocol splits by
// class instead (CUB-200-2011: the first 100 classes train, the other 100 test; Cars196: 98/98;
// Stanford Online Products: its train and test lists, whose classes are disjoint).

// Dataset formats reported in ListError.Format.
const (
	FormatCUB  = "CUB-200-2011"
	FormatCars = "Cars196"
	FormatSOP  = "Stanford Online Products"
)

// ListError is a problem in a list file of a standard dataset format.
type ListError struct {
	Format string // FormatCUB, FormatCars or FormatSOP
	Path   string // the list file
	Line   int    // 1-based line, 0 when the problem is not at one line
	Err    error
}

func (e *ListError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("data: %s list %q line %d: %v", e.Format, e.Path, e.Line, e.Err)
	}
	return fmt.Sprintf("data: %s list %q: %v", e.Format, e.Path, e.Err)
}

func (e *ListError) Unwrap() error { return e.Err }

// listLine is one non-blank line of a list file, split into fields.
type listLine struct {
	line   int
	fields []string
}

// readList reads the non-blank lines of a list file. split separates a line into fields; it
// returns nil for a line that is not data (e.g. a header), which is skipped.
func readList(format, path string, split func(line int, s string) ([]string, error)) ([]listLine, error) {
	f, err := OpenRegular(path, MaxListBytes)
	if err != nil {
		return nil, fmt.Errorf("data: %s list: %w", format, err)
	}
	defer f.Close()
	var out []listLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		s := sc.Text()
		if n == 1 {
			s = strings.TrimPrefix(s, "\ufeff")
		}
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		fields, err := split(n, s)
		if err != nil {
			return nil, &ListError{Format: format, Path: path, Line: n, Err: err}
		}
		if fields != nil {
			out = append(out, listLine{line: n, fields: fields})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &ListError{Format: format, Path: path, Err: err}
	}
	return out, nil
}

// idAndRest splits "<integer id><sep><rest>" where sep is a run of spaces, tabs and at most one
// comma (the official CUB lists use "1 001.Black_footed_Albatross/x.jpg", the shared subset
// "0, Black_footed_Albatross/0000.jpg").
func idAndRest(s string) (id int, rest string, err error) {
	i := strings.IndexAny(s, " \t,")
	if i < 0 {
		return 0, "", fmt.Errorf("want two fields \"<id> <value>\", got %q", s)
	}
	id, err = strconv.Atoi(s[:i])
	if err != nil {
		return 0, "", fmt.Errorf("bad id %q: want an integer", s[:i])
	}
	rest = strings.TrimLeft(s[i:], " \t")
	rest = strings.TrimPrefix(rest, ",")
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return 0, "", fmt.Errorf("want two fields \"<id> <value>\", got %q", s)
	}
	return id, rest, nil
}

// idPairList reads a CUB list of "<id> <value>" lines into a map id -> (value, line), rejecting a
// repeated id.
func idPairList(root, name string) (map[int]listLine, []int, error) {
	path := filepath.Join(root, name)
	lines, err := readList(FormatCUB, path, func(_ int, s string) ([]string, error) {
		id, rest, err := idAndRest(s)
		if err != nil {
			return nil, err
		}
		return []string{strconv.Itoa(id), rest}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(lines) == 0 {
		return nil, nil, &ListError{Format: FormatCUB, Path: path, Err: errors.New("no lines")}
	}
	byID := make(map[int]listLine, len(lines))
	order := make([]int, 0, len(lines))
	for _, l := range lines {
		id, _ := strconv.Atoi(l.fields[0])
		if prev, dup := byID[id]; dup {
			return nil, nil, &ListError{Format: FormatCUB, Path: path, Line: l.line,
				Err: fmt.Errorf("id %d repeated (first at line %d)", id, prev.line)}
		}
		byID[id] = l
		order = append(order, id)
	}
	return byID, order, nil
}

// LoadCUB reads a dataset in the CUB-200-2011 layout under root: images.txt ("<image id> <path
// under root/images>"), image_class_labels.txt ("<image id> <class id>"), classes.txt ("<class id>
// <name>", optional: without it classes are named by their ids) and train_test_split.txt ("<image
// id> <1 train | 0 test>", optional; it sets Item.Split to "train" or "test"). Fields are separated
// by spaces or by a comma (the shared CUB-100 subset writes "0, name"); class ids may start at 0 or 1.
// Labels are 0-based in class-id order over the classes of classes.txt (over the labelled class ids
// without it). Items are in images.txt order with Path "images/<path>" relative to Root = root,
// Line their images.txt line and Source that file. Errors are *ListError values naming the file
// and line. The metric-learning protocol splits CUB-200-2011 by class (labels 0–99 train), not by
// train_test_split.txt.
func LoadCUB(root string) (*Dataset, error) {
	imagesPath := filepath.Join(root, "images.txt")
	images, order, err := idPairList(root, "images.txt")
	if err != nil {
		return nil, err
	}
	labelsPath := filepath.Join(root, "image_class_labels.txt")
	labels, labelOrder, err := idPairList(root, "image_class_labels.txt")
	if err != nil {
		return nil, err
	}
	lerr := func(path string, line int, format string, args ...any) error {
		return &ListError{Format: FormatCUB, Path: path, Line: line, Err: fmt.Errorf(format, args...)}
	}
	classOf := make(map[int]int, len(labels)) // image id -> class id
	for _, id := range labelOrder {
		l := labels[id]
		c, err := strconv.Atoi(l.fields[1])
		if err != nil {
			return nil, lerr(labelsPath, l.line, "bad class id %q: want an integer", l.fields[1])
		}
		if _, ok := images[id]; !ok {
			return nil, lerr(labelsPath, l.line, "image id %d is not in %s", id, imagesPath)
		}
		classOf[id] = c
	}

	var classIDs []int
	names := map[int]string{}
	classesPath := filepath.Join(root, "classes.txt")
	if fileExists(classesPath) {
		classes, corder, err := idPairList(root, "classes.txt")
		if err != nil {
			return nil, err
		}
		for _, c := range corder {
			names[c] = classes[c].fields[1]
			classIDs = append(classIDs, c)
		}
		for _, id := range labelOrder {
			if _, ok := names[classOf[id]]; !ok {
				return nil, lerr(labelsPath, labels[id].line, "class id %d is not in %s", classOf[id], classesPath)
			}
		}
	} else {
		for _, id := range labelOrder {
			if _, ok := names[classOf[id]]; !ok {
				names[classOf[id]] = strconv.Itoa(classOf[id])
				classIDs = append(classIDs, classOf[id])
			}
		}
	}
	slices.Sort(classIDs)
	labelOf := make(map[int]int, len(classIDs))
	ds := &Dataset{Root: root, Source: imagesPath, Classes: make([]string, len(classIDs))}
	for i, c := range classIDs {
		labelOf[c] = i
		ds.Classes[i] = names[c]
	}

	var split map[int]listLine
	splitPath := filepath.Join(root, "train_test_split.txt")
	if fileExists(splitPath) {
		if split, _, err = idPairList(root, "train_test_split.txt"); err != nil {
			return nil, err
		}
	}
	seen := make(map[string]int, len(order))
	ds.Items = make([]Item, 0, len(order))
	for _, id := range order {
		im := images[id]
		c, ok := classOf[id]
		if !ok {
			return nil, lerr(imagesPath, im.line, "image id %d has no class in %s", id, labelsPath)
		}
		rel := filepath.Clean(filepath.FromSlash(im.fields[1]))
		if filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return nil, lerr(imagesPath, im.line, "path %q must be relative to %s", im.fields[1], filepath.Join(root, "images"))
		}
		if prev, dup := seen[rel]; dup {
			return nil, lerr(imagesPath, im.line, "duplicate path %q (first at line %d)", im.fields[1], prev)
		}
		seen[rel] = im.line
		it := Item{Path: filepath.Join("images", rel), Label: labelOf[c], Class: names[c], Line: im.line}
		if split != nil {
			s, ok := split[id]
			if !ok {
				return nil, lerr(imagesPath, im.line, "image id %d is not in %s", id, splitPath)
			}
			switch s.fields[1] {
			case "1":
				it.Split = "train"
			case "0":
				it.Split = "test"
			default:
				return nil, lerr(splitPath, s.line, "bad flag %q: want 1 (train) or 0 (test)", s.fields[1])
			}
		}
		ds.Items = append(ds.Items, it)
	}
	return ds, nil
}

// LoadCars196 reads a Cars196 (Stanford Cars) image list. Two plain-text exports of the devkit's
// cars_annos.mat are accepted (the .mat file itself is not):
//
//   - a .csv file with a header naming the columns, in any order: "relative_im_path" (or "path"),
//     "class", and optionally "test" (1 test, 0 train); other columns (bbox_x1, ...) are ignored;
//     e.g. "relative_im_path,bbox_x1,bbox_y1,bbox_x2,bbox_y2,class,test";
//   - any other file: lines "<path> <class> [<test>]" separated by spaces or tabs, e.g.
//     "car_ims/000001.jpg 1 0", without a header; lines starting with '#' are comments.
//
// Paths are relative to the list's folder (Root). Class ids are integers (1–196 in the devkit);
// labels are 0-based in class-id order and classes are named by their ids. Item.Split is "train" or
// "test" when the test column is present. Errors are *ListError values naming the file and line.
// The metric-learning protocol splits by class (labels 0–97 train, 98–195 test).
func LoadCars196(listPath string) (*Dataset, error) {
	lerr := func(line int, format string, args ...any) error {
		return &ListError{Format: FormatCars, Path: listPath, Line: line, Err: fmt.Errorf(format, args...)}
	}
	var rows []listLine // fields: path, class, test ("" when absent)
	if strings.EqualFold(filepath.Ext(listPath), ".csv") {
		var err error
		if rows, err = readCarsCSV(listPath); err != nil {
			return nil, err
		}
	} else {
		var err error
		rows, err = readList(FormatCars, listPath, func(_ int, s string) ([]string, error) {
			if strings.HasPrefix(s, "#") {
				return nil, nil
			}
			f := strings.Fields(s)
			switch len(f) {
			case 2:
				return []string{f[0], f[1], ""}, nil
			case 3:
				return f, nil
			}
			return nil, fmt.Errorf("%d fields, want \"<path> <class> [<test>]\"", len(f))
		})
		if err != nil {
			return nil, err
		}
	}
	if len(rows) == 0 {
		return nil, lerr(0, "no images")
	}
	type parsed struct {
		path, split string
		class, line int
	}
	items := make([]parsed, len(rows))
	for i, r := range rows {
		c, err := strconv.Atoi(r.fields[1])
		if err != nil {
			return nil, lerr(r.line, "bad class %q: want an integer", r.fields[1])
		}
		p := parsed{path: r.fields[0], class: c, line: r.line}
		switch r.fields[2] {
		case "":
		case "1":
			p.split = "test"
		case "0":
			p.split = "train"
		default:
			return nil, lerr(r.line, "bad test flag %q: want 1 (test) or 0 (train)", r.fields[2])
		}
		items[i] = p
	}
	ds := &Dataset{Root: filepath.Dir(listPath), Source: listPath}
	labelOf := map[int]int{}
	for _, it := range items {
		labelOf[it.class] = 0
	}
	ids := make([]int, 0, len(labelOf))
	for c := range labelOf {
		ids = append(ids, c)
	}
	slices.Sort(ids)
	for i, c := range ids {
		labelOf[c] = i
		ds.Classes = append(ds.Classes, strconv.Itoa(c))
	}
	seen := make(map[string]int, len(items))
	for _, p := range items {
		it := Item{Path: filepath.Clean(filepath.FromSlash(p.path)), Label: labelOf[p.class], Split: p.split, Line: p.line}
		it.Class = ds.Classes[it.Label]
		if prev, dup := seen[it.Path]; dup {
			return nil, lerr(p.line, "duplicate path %q (first at line %d)", p.path, prev)
		}
		seen[it.Path] = p.line
		ds.Items = append(ds.Items, it)
	}
	return ds, nil
}

// readCarsCSV reads the CSV form of a Cars196 list into rows of (path, class, test).
func readCarsCSV(path string) ([]listLine, error) {
	f, err := OpenRegular(path, MaxListBytes)
	if err != nil {
		return nil, fmt.Errorf("data: %s list: %w", FormatCars, err)
	}
	defer f.Close()
	lerr := func(line int, format string, args ...any) error {
		return &ListError{Format: FormatCars, Path: path, Line: line, Err: fmt.Errorf(format, args...)}
	}
	cerr := func(err error) error {
		var long *lineTooLongError
		if errors.As(err, &long) {
			return &ListError{Format: FormatCars, Path: path, Line: long.line, Err: err}
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return &ListError{Format: FormatCars, Path: path, Line: pe.Line, Err: pe.Err}
		}
		return &ListError{Format: FormatCars, Path: path, Err: err}
	}
	r := csv.NewReader(newLineLimiter(f))
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if err == io.EOF {
		return nil, lerr(0, "empty file, want a header naming the columns relative_im_path,class[,test]")
	}
	if err != nil {
		return nil, cerr(err)
	}
	col := map[string]int{"path": -1, "class": -1, "test": -1}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if h == "relative_im_path" {
			h = "path"
		}
		if j, known := col[h]; known {
			if j >= 0 {
				return nil, lerr(1, "header names column %q twice", header[i])
			}
			col[h] = i
		}
	}
	if col["path"] < 0 || col["class"] < 0 {
		return nil, lerr(1, "header %q lacks a relative_im_path (or path) and a class column", strings.Join(header, ","))
	}
	r.FieldsPerRecord = len(header)
	var rows []listLine
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line, _ := r.FieldPos(0)
		if errors.Is(err, csv.ErrFieldCount) {
			return nil, lerr(line, "%d fields, want %d (%s)", len(rec), len(header), strings.Join(header, ","))
		}
		if err != nil {
			return nil, cerr(err)
		}
		row := listLine{line: line, fields: []string{strings.TrimSpace(rec[col["path"]]), strings.TrimSpace(rec[col["class"]]), ""}}
		if c := col["test"]; c >= 0 {
			row.fields[2] = strings.TrimSpace(rec[c])
		}
		if row.fields[0] == "" {
			return nil, lerr(line, "empty path")
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// sopHeader is the first line of the Stanford Online Products lists.
var sopHeader = []string{"image_id", "class_id", "super_class_id", "path"}

// LoadSOP reads Stanford Online Products from root: Ebay_train.txt and Ebay_test.txt (at least one
// must exist), each a header line "image_id class_id super_class_id path" then one line per image
// with fields separated by spaces. Items are the train list's then the test list's, with Split
// "train" or "test", Path relative to Root = root and Line their line in that list; Source is
// root. Class ids (1–22634 in the release) are labelled 0-based in class-id order across both
// lists and classes are named by their ids. Errors are *ListError values naming the file and line.
func LoadSOP(root string) (*Dataset, error) {
	type row struct {
		path, split string
		class, line int
		file        string
	}
	var rows []row
	found := false
	for _, split := range []string{"train", "test"} {
		path := filepath.Join(root, "Ebay_"+split+".txt")
		if !fileExists(path) {
			continue
		}
		found = true
		lines, err := readList(FormatSOP, path, func(n int, s string) ([]string, error) {
			f := strings.Fields(s)
			if n == 1 {
				if !slices.Equal(f, sopHeader) {
					return nil, fmt.Errorf("header %q, want %q", s, strings.Join(sopHeader, " "))
				}
				return nil, nil
			}
			if len(f) != 4 {
				return nil, fmt.Errorf("%d fields, want 4 (%s)", len(f), strings.Join(sopHeader, " "))
			}
			return f, nil
		})
		if err != nil {
			return nil, err
		}
		if len(lines) == 0 {
			return nil, &ListError{Format: FormatSOP, Path: path, Err: errors.New("no images after the header")}
		}
		for _, l := range lines {
			for k, name := range sopHeader[:3] {
				if _, err := strconv.Atoi(l.fields[k]); err != nil {
					return nil, &ListError{Format: FormatSOP, Path: path, Line: l.line,
						Err: fmt.Errorf("bad %s %q: want an integer", name, l.fields[k])}
				}
			}
			c, _ := strconv.Atoi(l.fields[1])
			rows = append(rows, row{path: l.fields[3], split: split, class: c, line: l.line, file: path})
		}
	}
	if !found {
		return nil, fmt.Errorf("data: %s: %w", FormatSOP, &os.PathError{Op: "open",
			Path: filepath.Join(root, "Ebay_train.txt"), Err: os.ErrNotExist})
	}
	labelOf := map[int]int{}
	for _, r := range rows {
		labelOf[r.class] = 0
	}
	ids := make([]int, 0, len(labelOf))
	for c := range labelOf {
		ids = append(ids, c)
	}
	slices.Sort(ids)
	ds := &Dataset{Root: root, Source: root, Classes: make([]string, len(ids))}
	for i, c := range ids {
		labelOf[c] = i
		ds.Classes[i] = strconv.Itoa(c)
	}
	type at struct {
		file string
		line int
	}
	seen := make(map[string]at, len(rows))
	ds.Items = make([]Item, 0, len(rows))
	for _, r := range rows {
		p := filepath.Clean(filepath.FromSlash(r.path))
		if prev, dup := seen[p]; dup {
			return nil, &ListError{Format: FormatSOP, Path: r.file, Line: r.line,
				Err: fmt.Errorf("duplicate path %q (first at line %d of %s)", r.path, prev.line, prev.file)}
		}
		seen[p] = at{r.file, r.line}
		l := labelOf[r.class]
		ds.Items = append(ds.Items, Item{Path: p, Label: l, Class: ds.Classes[l], Split: r.split, Line: r.line})
	}
	return ds, nil
}

// fileExists reports whether path is a regular file (following symbolic links).
func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}
