package main

import (
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/grouploss/pipeline/pipeline/data"
)

// The .npy + .csv pair of `pipeline embed` carries a common identity: every row of the .csv holds
// the SHA-256 of the .npy file (npy_sha256) and of the model that computed it (model_sha256).
// The .npy keeps NumPy's plain header (NumPy refuses extra header keys), so the identity lives in
// the .csv and is derived from the .npy's bytes: a .csv beside another .npy is detected.
const (
	pairNPYColumn   = "npy_sha256"
	pairModelColumn = "model_sha256"
)

// pairIdentity is what a labels .csv says about its .npy.
type pairIdentity struct {
	NPY, Model string // "" when the .csv does not say (written by hand or by an older embed)
}

// writePair writes the embeddings .npy and its labels .csv as a pair: both are written and synced
// under temporary names first, then renamed, so a failure (a full disk) leaves the old pair
// untouched; a crash between the two renames leaves a pair whose identities disagree, which
// readers refuse (checkPair).
func writePair(npy, labels string, writeNPY func(path string) error, writeCSV func(path, npySHA string) error) (err error) {
	tmpNPY := filepath.Join(filepath.Dir(npy), "."+filepath.Base(npy)+".pair-tmp")
	tmpCSV := filepath.Join(filepath.Dir(labels), "."+filepath.Base(labels)+".pair-tmp")
	defer func() {
		if err != nil {
			os.Remove(tmpNPY)
			os.Remove(tmpCSV)
		}
	}()
	if err := writeNPY(tmpNPY); err != nil {
		return err
	}
	sum, err := fileSHA256(tmpNPY)
	if err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	if err := writeCSV(tmpCSV, sum); err != nil {
		return err
	}
	if err := os.Rename(tmpNPY, npy); err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	if err := os.Rename(tmpCSV, labels); err != nil {
		return fmt.Errorf("embed: %w (%q is new, its labels file is not: run embed again)", err, npy)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %q: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readPairIdentity reads the identity columns of a labels .csv; every row must agree.
func readPairIdentity(labels string) (pairIdentity, error) {
	r, header, cols, closeFile, err := openLabelsCSV(labels)
	if err != nil {
		return pairIdentity{}, err
	}
	defer closeFile()
	npyCol, okN := cols[pairNPYColumn]
	modelCol, okM := cols[pairModelColumn]
	var id pairIdentity
	if !okN && !okM {
		return id, nil
	}
	for row := 1; ; row++ {
		rec, err := r.Read()
		if err == io.EOF {
			return id, nil
		}
		if err != nil {
			return id, fmt.Errorf("labels %q: %w", labels, err)
		}
		for _, c := range []struct {
			ok  bool
			col int
			dst *string
		}{{okN, npyCol, &id.NPY}, {okM, modelCol, &id.Model}} {
			if !c.ok {
				continue
			}
			v := strings.TrimSpace(rec[c.col])
			if row == 1 {
				*c.dst = v
			} else if v != *c.dst {
				return id, fmt.Errorf("labels %q: row %d: %s %q differs from the first row's %q", labels, row, header[c.col], v, *c.dst)
			}
		}
	}
}

// errPairMismatch marks an embeddings .npy and a labels .csv that were not written together.
var errPairMismatch = errors.New("the embeddings and labels files were not written together")

// checkPair checks that the labels .csv belongs to the embeddings .npy (when the .csv records
// the .npy's SHA-256) and returns the identity the .csv records. A missing .csv is not an error
// when optional is set (a --query-npy without its labels).
func checkPair(npy, labels string, optional bool) (pairIdentity, error) {
	id, err := readPairIdentity(labels)
	if err != nil {
		if optional && errors.Is(err, fs.ErrNotExist) {
			return pairIdentity{}, nil
		}
		return id, err
	}
	if id.NPY == "" {
		return id, nil
	}
	sum, err := fileSHA256(npy)
	if err != nil {
		return id, err
	}
	if sum != id.NPY {
		return id, fmt.Errorf("%w: %q has sha256 %.12s…, but %q lists the rows of an .npy with sha256 %.12s… (run `pipeline embed` again to write both)",
			errPairMismatch, npy, sum, labels, id.NPY)
	}
	return id, nil
}

// checkQueryModel refuses query embeddings (--query-npy) that another model computed than the
// index's, when the labels .csv beside them records the model (as `pipeline embed` writes it);
// without that record the match cannot be checked, which is said on logw.
func checkQueryModel(npy, index, indexModel string, logw io.Writer) error {
	id, err := checkPair(npy, labelsPath(npy), true)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	switch {
	case id.Model == "" || indexModel == "":
		fmt.Fprintf(logw, "search: cannot check that the model of %q is the index's (no %s recorded): trusting it\n", npy, pairModelColumn)
	case id.Model != indexModel:
		return fmt.Errorf("search: %q holds embeddings of the model with sha256 %.12s…, but the index %q was built with the model with sha256 %.12s…: "+
			"they are not comparable; embed the queries with the index's model", npy, id.Model, index, indexModel)
	}
	return nil
}

// openLabelsCSV opens a labels CSV (as embed writes it) after its header: the reader, the header,
// the column of each lower-cased name, and the function that closes the file. Errors name the file.
func openLabelsCSV(path string) (r *csv.Reader, header []string, cols map[string]int, closeFile func() error, err error) {
	f, err := data.OpenRegular(path, data.MaxListBytes)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	r = csv.NewReader(f)
	r.TrimLeadingSpace = true
	r.ReuseRecord = true
	if header, err = r.Read(); err != nil {
		f.Close()
		return nil, nil, nil, nil, fmt.Errorf("labels %q: %w", path, err)
	}
	cols = map[string]int{}
	for i, h := range header {
		cols[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))] = i
	}
	return r, header, cols, f.Close, nil
}
