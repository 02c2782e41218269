// Package data loads labelled image datasets, turns images into normalized float32 tensors, decodes
// them in parallel in order, caches extracted features on disk and reports progress.
package data

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Item is one labelled image of a Dataset.
type Item struct {
	Path  string // file path, absolute or relative to Dataset.Root (OS separators)
	Label int    // class id, an index into Dataset.Classes
	Class string // class name, Dataset.Classes[Label]
	Split string // the manifest's optional "split" column or the format's own split, else ""
	Line  int    // 1-based line of the item in its manifest or list file, 0 for image folders
}

// Dataset is a list of labelled images.
type Dataset struct {
	Root    string   // folder that relative Item.Path values are relative to
	Items   []Item   // in manifest order, or by class then file name for image folders
	Classes []string // class names; index = label
	Source  string   // the manifest or list file, or folder, the dataset was loaded from
}

// imageExts are the file extensions (lower case) of the image formats this package decodes.
var imageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true}

func isImageFile(name string) bool {
	return imageExts[strings.ToLower(filepath.Ext(name))]
}

// Load loads a dataset from path: a .csv file is read as a manifest (see LoadManifest). A folder is
// read, by the first of these it holds: manifest.csv, through that manifest (it wins over the lists
// below, so a folder with both loads as before); images.txt and image_class_labels.txt, as
// CUB-200-2011 (LoadCUB); Ebay_train.txt or Ebay_test.txt, as Stanford Online Products (LoadSOP);
// cars_annos.csv or cars_annos.txt, as a Cars196 list (LoadCars196); else as an image folder
// (LoadImageFolder).
func Load(path string) (*Dataset, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("data: load: %w", err)
	}
	if !fi.IsDir() {
		if strings.EqualFold(filepath.Ext(path), ".csv") {
			return LoadManifest(path)
		}
		return nil, fmt.Errorf("data: load %q: not a folder or a .csv manifest", path)
	}
	has := func(name string) bool { return fileExists(filepath.Join(path, name)) }
	switch {
	case has("manifest.csv"):
		return LoadManifest(filepath.Join(path, "manifest.csv"))
	case has("images.txt") && has("image_class_labels.txt"):
		return LoadCUB(path)
	case has("Ebay_train.txt") || has("Ebay_test.txt"):
		return LoadSOP(path)
	case has("cars_annos.csv"):
		return LoadCars196(filepath.Join(path, "cars_annos.csv"))
	case has("cars_annos.txt"):
		return LoadCars196(filepath.Join(path, "cars_annos.txt"))
	}
	return LoadImageFolder(path)
}

// LoadImageFolder loads root/<class>/<image>: every non-hidden sub-folder of root is a class, classes
// are sorted by name and labelled by their index. Only .jpg, .jpeg and .png files (any case) count
// as images; hidden files, other files and deeper folders are ignored. Items are ordered by class,
// then by file name; their paths are relative to root. It fails if root has no class folder or a
// class folder holds no image.
func LoadImageFolder(root string) (*Dataset, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("data: image folder: %w", err)
	}
	ds := &Dataset{Root: root, Source: root}
	for _, e := range entries { // os.ReadDir sorts by name
		if strings.HasPrefix(e.Name(), ".") || !isDir(root, e) {
			continue
		}
		ds.Classes = append(ds.Classes, e.Name())
	}
	if len(ds.Classes) == 0 {
		return nil, fmt.Errorf("data: image folder %q: no class folders", root)
	}
	for label, class := range ds.Classes {
		dir := filepath.Join(root, class)
		files, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("data: image folder: %w", err)
		}
		n := 0
		for _, f := range files {
			name := f.Name()
			if strings.HasPrefix(name, ".") || !isImageFile(name) || isDir(dir, f) {
				continue
			}
			ds.Items = append(ds.Items, Item{Path: filepath.Join(class, name), Label: label, Class: class})
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("data: image folder: class folder %q has no .jpg, .jpeg or .png images", dir)
		}
	}
	return ds, nil
}

// isDir reports whether the entry is a folder, following symbolic links.
func isDir(parent string, e os.DirEntry) bool {
	if e.Type()&os.ModeSymlink != 0 {
		fi, err := os.Stat(filepath.Join(parent, e.Name()))
		return err == nil && fi.IsDir()
	}
	return e.IsDir()
}

// MaxLabel is the largest integer label a manifest may use: integer labels are class indices and
// Dataset.Classes gets one entry per index up to the largest.
const MaxLabel = 1_000_000

// ManifestError is a problem at one line of a manifest file.
type ManifestError struct {
	Path string // the manifest file
	Line int    // 1-based line, 0 when the problem is not at one line
	Err  error
}

func (e *ManifestError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("data: manifest %q line %d: %v", e.Path, e.Line, e.Err)
	}
	return fmt.Sprintf("data: manifest %q: %v", e.Path, e.Err)
}

func (e *ManifestError) Unwrap() error { return e.Err }

// LoadManifest reads a CSV manifest. The header line is required and names the columns in any
// order: "path" and "label" are required, "split" is optional, other columns are ignored. Paths are
// relative to the manifest's folder (or absolute) and must be unique. Labels are either all
// non-negative integers (used as the label; Classes are their decimal strings, up to the largest
// label) or all names (Classes are the sorted distinct names, label = index). Errors are
// *ManifestError values naming the file and line.
func LoadManifest(csvPath string) (*Dataset, error) {
	f, err := OpenRegular(csvPath, MaxListBytes)
	if err != nil {
		return nil, fmt.Errorf("data: manifest: %w", err)
	}
	defer f.Close()
	return ParseManifest(f, csvPath)
}

// ParseManifest is LoadManifest on the manifest's content; csvPath names the file: relative item
// paths are relative to its folder, and errors name it. It reads no other file.
func ParseManifest(in io.Reader, csvPath string) (*Dataset, error) {
	merr := func(line int, format string, args ...any) error {
		return &ManifestError{Path: csvPath, Line: line, Err: fmt.Errorf(format, args...)}
	}

	r := csv.NewReader(newLineLimiter(in))
	r.TrimLeadingSpace = true
	r.ReuseRecord = false
	header, err := r.Read()
	if err == io.EOF {
		return nil, merr(0, "empty file, want a header line naming the columns path,label")
	}
	if err != nil {
		return nil, csvError(csvPath, err)
	}
	col := map[string]int{"path": -1, "label": -1, "split": -1}
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\ufeff")
		}
		h = strings.ToLower(strings.TrimSpace(h))
		j, known := col[h]
		if !known {
			continue
		}
		if j >= 0 {
			return nil, merr(1, "header names column %q twice", h)
		}
		col[h] = i
	}
	for _, need := range []string{"path", "label"} {
		if col[need] < 0 {
			return nil, merr(1, "header %q has no %q column (a header line path,label is required)",
				strings.Join(header, ","), need)
		}
	}
	r.FieldsPerRecord = len(header)

	type row struct {
		path, label, split string
		line               int
	}
	var rows []row
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, csv.ErrFieldCount) {
			return nil, csvError(csvPath, err)
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			what := "missing"
			if len(rec) > len(header) {
				what = "extra"
			}
			return nil, merr(line, "%s fields: got %d, want %d (%s)", what, len(rec), len(header),
				strings.Join(header, ","))
		}
		rw := row{path: strings.TrimSpace(rec[col["path"]]), label: strings.TrimSpace(rec[col["label"]]), line: line}
		if c := col["split"]; c >= 0 {
			rw.split = strings.TrimSpace(rec[c])
		}
		if rw.path == "" {
			return nil, merr(line, "empty path")
		}
		if rw.label == "" {
			return nil, merr(line, "bad label: empty")
		}
		rows = append(rows, rw)
	}
	if len(rows) == 0 {
		return nil, merr(0, "no items after the header")
	}

	// Labels are integers if the first one is; then every one must be.
	_, firstErr := strconv.Atoi(rows[0].label)
	numeric := firstErr == nil
	ds := &Dataset{Root: filepath.Dir(csvPath), Source: csvPath, Items: make([]Item, len(rows))}
	names := map[string]int{}
	maxLabel := -1
	for i, rw := range rows {
		it := Item{Path: filepath.Clean(filepath.FromSlash(rw.path)), Split: rw.split, Line: rw.line}
		if it.Path != strings.TrimSpace(it.Path) {
			return nil, merr(rw.line, "path %q begins or ends with white space once cleaned (%q)", rw.path, it.Path)
		}
		if numeric {
			v, err := strconv.Atoi(rw.label)
			if err != nil || v < 0 {
				return nil, merr(rw.line, "bad label %q: want a non-negative integer like the first row's %q",
					rw.label, rows[0].label)
			}
			if v > MaxLabel {
				return nil, merr(rw.line, "label %d is above %d: integer labels are class indices 0..N-1 (use class names for other ids)",
					v, MaxLabel)
			}
			it.Label = v
			maxLabel = max(maxLabel, v)
		} else {
			if _, err := strconv.Atoi(rw.label); err == nil {
				return nil, merr(rw.line, "bad label %q: an integer among class names (first row's label is %q)",
					rw.label, rows[0].label)
			}
			names[rw.label] = 0
			it.Class = rw.label
		}
		ds.Items[i] = it
	}
	if numeric {
		ds.Classes = make([]string, maxLabel+1)
		for i := range ds.Classes {
			ds.Classes[i] = strconv.Itoa(i)
		}
	} else {
		for name := range names {
			ds.Classes = append(ds.Classes, name)
		}
		slices.Sort(ds.Classes)
		for i, name := range ds.Classes {
			names[name] = i
		}
	}
	seen := make(map[string]int, len(rows))
	for i := range ds.Items {
		it := &ds.Items[i]
		if numeric {
			it.Class = ds.Classes[it.Label]
		} else {
			it.Label = names[it.Class]
		}
		key := ds.Resolve(i)
		if prev, dup := seen[key]; dup {
			return nil, merr(it.Line, "duplicate path %q (first at line %d)", rows[i].path, prev)
		}
		seen[key] = it.Line
	}
	return ds, nil
}

func csvError(path string, err error) error {
	var long *lineTooLongError
	if errors.As(err, &long) {
		return &ManifestError{Path: path, Line: long.line, Err: err}
	}
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &ManifestError{Path: path, Line: pe.Line, Err: pe.Err}
	}
	return &ManifestError{Path: path, Err: err}
}

// Resolve returns the file path of item i: Item.Path joined to Root unless it is absolute.
func (d *Dataset) Resolve(i int) string {
	p := d.Items[i].Path
	if filepath.IsAbs(p) || d.Root == "" {
		return p
	}
	return filepath.Join(d.Root, p)
}

// ClassCounts returns the number of items of each label; len = len(Classes).
func (d *Dataset) ClassCounts() []int {
	counts := make([]int, len(d.Classes))
	for _, it := range d.Items {
		counts[it.Label]++
	}
	return counts
}

// Select returns the indices into Items, in order, of the items for which keep is true.
func (d *Dataset) Select(keep func(Item) bool) []int {
	var idx []int
	for i, it := range d.Items {
		if keep(it) {
			idx = append(idx, i)
		}
	}
	return idx
}

// Labels returns the labels of the items at the given indices into Items.
func (d *Dataset) Labels(idx []int) []int {
	labels := make([]int, len(idx))
	for i, j := range idx {
		labels[i] = d.Items[j].Label
	}
	return labels
}

// Fingerprint returns a hex SHA-256 of the items' paths (as given, slash-separated) and labels, in
// order, and of the class names: a cache-key part that changes when the list changes. File
// contents are not read.
func (d *Dataset) Fingerprint() string {
	h := sha256.New()
	var buf [8]byte
	writeString := func(s string) {
		binary.LittleEndian.PutUint64(buf[:], uint64(len(s)))
		h.Write(buf[:])
		h.Write([]byte(s))
	}
	for _, c := range d.Classes {
		writeString(c)
	}
	for _, it := range d.Items {
		writeString(filepath.ToSlash(it.Path))
		binary.LittleEndian.PutUint64(buf[:], uint64(it.Label))
		h.Write(buf[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}
