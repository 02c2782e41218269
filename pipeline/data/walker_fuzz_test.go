//go:build unix

package data

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FuzzImageFolder builds an image folder from arbitrary names and entry kinds (regular files,
// folders, FIFOs, symbolic links to /dev/zero, inside the folder, outside it and dangling) and
// loads it. Properties: LoadImageFolder and every read of its items return promptly, without
// panicking; an accepted dataset has sorted classes that are non-hidden folders, items whose labels
// index them and whose paths stay relative and inside root; items that are not regular files are
// refused with ErrNotRegular when read; ContentKey is defined. Seeds in
// testdata/fuzz/FuzzImageFolder.
func FuzzImageFolder(f *testing.F) {
	f.Add("a.jpg\nb.png\nc.jpeg", []byte{0, 1, 0})
	f.Add("x.jpg\nzero.jpg\nin.jpg\nout.jpg\ndangling.png\nsub", []byte{2, 3, 4, 6, 7, 5})
	f.Add(".hidden.jpg\nUPPER.JPG\nnoext\n\xff\xfe.png\nspace .jpg", []byte{0, 1, 0, 1, 0})
	f.Add("c\nd\ne.jpg", []byte{5, 8, 2})
	outside := f.TempDir()
	os.WriteFile(filepath.Join(outside, "o.jpg"), []byte("not an image"), 0o644)
	f.Fuzz(func(t *testing.T, names string, kinds []byte) {
		if len(kinds) == 0 {
			return
		}
		root := t.TempDir()
		classes := []string{"a", "b"}
		for _, c := range classes {
			os.MkdirAll(filepath.Join(root, c), 0o755)
		}
		seen := map[string]bool{} // each name once: writing to an existing FIFO would block the test itself
		for i, name := range strings.Split(names, "\n") {
			if i >= 16 || seen[name] || name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 200 {
				continue
			}
			seen[name] = true
			k := kinds[i%len(kinds)] % 9
			p := filepath.Join(root, classes[i%2], name)
			switch k {
			case 0, 1:
				if f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
					f.Write([]byte{0x89, 'P', 'N', 'G', byte(i)})
					f.Close()
				}
			case 2:
				syscall.Mkfifo(p, 0o644)
			case 3:
				os.Symlink("/dev/zero", p)
			case 4:
				os.Symlink(filepath.Join("..", classes[(i+1)%2], name), p) // inside, maybe dangling
			case 5:
				q := filepath.Join(root, name) // a class folder
				os.MkdirAll(q, 0o755)
				if f, err := os.OpenFile(filepath.Join(q, "0.jpg"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
					f.Close()
				}
			case 6:
				os.Symlink(filepath.Join(outside, "o.jpg"), p)
			case 7:
				os.Symlink(filepath.Join(root, "missing"), p)
			case 8:
				os.Symlink(outside, filepath.Join(root, name)) // a class folder outside root
			}
		}
		var ds *Dataset
		var err error
		within(t, 10*time.Second, func() { ds, err = LoadImageFolder(root) })
		if err != nil {
			return
		}
		for i, c := range ds.Classes {
			if strings.HasPrefix(c, ".") || (i > 0 && ds.Classes[i-1] >= c) {
				t.Fatalf("classes %q", ds.Classes)
			}
		}
		for i, it := range ds.Items {
			if it.Label < 0 || it.Label >= len(ds.Classes) || ds.Classes[it.Label] != it.Class {
				t.Fatalf("item %d: %+v", i, it)
			}
			if filepath.IsAbs(it.Path) || strings.HasPrefix(it.Path, "..") || filepath.Dir(it.Path) != it.Class {
				t.Fatalf("item %d path %q", i, it.Path)
			}
			within(t, 10*time.Second, func() {
				p := ds.Resolve(i)
				_, rerr := readFile(p, nil)
				st, serr := os.Stat(p)
				switch {
				case serr != nil:
					if rerr == nil {
						t.Fatalf("read %q that does not stat", p)
					}
				case !st.Mode().IsRegular():
					if !errors.Is(rerr, ErrNotRegular) {
						t.Fatalf("read %q (%v): %v, want ErrNotRegular", p, st.Mode(), rerr)
					}
				case rerr != nil && !errors.Is(rerr, fs.ErrPermission):
					t.Fatalf("read regular %q: %v", p, rerr)
				}
			})
		}
		within(t, 10*time.Second, func() {
			if _, err := ds.ContentKey(t.Context(), 2); err != nil {
				t.Fatalf("ContentKey: %v", err)
			}
		})
	})
}
