// Package gallery is the flat gallery index: L2-normalized embeddings with their paths, labels
// and the identity of the model that computed them, stored in one checksummed file (Write, Open)
// and searched exactly by cosine distance (Index.Search). pggallery keeps the same gallery in
// PostgreSQL.
package gallery

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/grouploss/pipeline/internal/atomicfile"
	"github.com/grouploss/pipeline/internal/f32le"
	"github.com/grouploss/pipeline/internal/matmul"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/data"
)

// Gallery index file, format version 1. One file, all integers little-endian:
//
//	offset    size    field
//	0         8       magic "\x89GLIDX\r\n"
//	8         4       format version (uint32), 1
//	12        4       flags (uint32), 0
//	16        8       D, the embedding dimension (uint64)
//	24        8       N, the number of embeddings (uint64)
//	32        8       M, the length of the metadata (uint64)
//	40        24      zero
//	64        4·N·D   embeddings: (N, D) row-major float32
//	64+4·N·D  M       metadata, JSON: {"paths": [N strings], "labels": [N strings], "model": Model}
//	                  (JSON strings: invalid UTF-8 in a path or label is stored as U+FFFD)
//	end-16    8       trailer magic "GLIDXEND"
//	end-8     4       CRC-32C (Castagnoli) of every byte before the trailer
//	end-4     4       zero
//
// The sizes in the header give the file's exact length, so a torn (truncated) file is detected
// before anything is read; the checksum catches corruption anywhere else.
const (
	indexMagic        = "\x89GLIDX\r\n"
	indexTrailerMagic = "GLIDXEND"
	indexVersion      = 1
	indexHeaderSize   = 64
	indexTrailerSize  = 16
	// maxIndexDim bounds D so that a corrupt header cannot ask for absurd allocations.
	maxIndexDim = 1 << 20
	// ioChunk is the buffer through which embeddings are converted to and from bytes.
	ioChunk = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// IndexError is a problem with a gallery index file: not an index, another format version,
// truncated (a torn write), corrupt (checksum mismatch) or inconsistent.
type IndexError struct {
	Path string // the index file
	Err  error
}

func (e *IndexError) Error() string { return fmt.Sprintf("gallery: index %q: %v", e.Path, e.Err) }

func (e *IndexError) Unwrap() error { return e.Err }

// Model identifies the embedding model an Index was computed with.
type Model struct {
	// Path is the model file's absolute path when the index was built (search's default model).
	Path string `json:"path"`
	// SHA256 is the hex SHA-256 of the model file; a model used to embed queries must match it.
	SHA256 string `json:"sha256"`
	// Metadata holds the model's embedding metadata: the preprocess.* keys and embedding_dim.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// IdentifyModel returns the identity of the ONNX model file at path: its absolute path, the
// SHA-256 of its bytes and its embedding metadata (metadata_props preprocess.* and embedding_dim).
func IdentifyModel(path string) (Model, error) {
	raw, err := onnxpb.ReadFile(path)
	if err != nil {
		return Model{}, fmt.Errorf("gallery: %w", err)
	}
	m, err := onnxpb.Unmarshal(raw, path)
	if err != nil {
		return Model{}, fmt.Errorf("gallery: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Model{}, fmt.Errorf("gallery: %w", err)
	}
	sum := sha256.Sum256(raw)
	id := Model{Path: abs, SHA256: hex.EncodeToString(sum[:])}
	for _, p := range m.GetMetadataProps() {
		if k := p.GetKey(); strings.HasPrefix(k, "preprocess.") || k == "embedding_dim" {
			if id.Metadata == nil {
				id.Metadata = map[string]string{}
			}
			id.Metadata[k] = p.GetValue()
		}
	}
	return id, nil
}

// Index is a gallery for exact nearest-neighbour search: N embeddings of dimension Dim with the
// image path and label of each, and the model that computed them.
type Index struct {
	Dim        int       // D
	Embeddings []float32 // (N, D) row-major; New L2-normalizes them
	Paths      []string  // N image paths
	Labels     []string  // N labels (class names)
	Model      Model     // zero when the index was built from precomputed embeddings

	// blockRows and queryRows override Search's block sizes (tests); 0 picks them.
	blockRows, queryRows int
}

// New returns an Index over the (len(paths), dim) row-major embeddings emb, one path and
// label per row. It L2-normalizes the rows of emb in place (zero rows stay zero) and keeps emb,
// without copying. Non-finite values, shape mismatches and an empty gallery are errors.
func New(emb []float32, dim int, paths, labels []string, model Model) (*Index, error) {
	x := &Index{Dim: dim, Embeddings: emb, Paths: paths, Labels: labels, Model: model}
	if err := x.check(); err != nil {
		return nil, err
	}
	rowops.L2Normalize(emb, dim)
	return x, nil
}

// Len returns N, the number of gallery rows.
func (x *Index) Len() int { return len(x.Paths) }

// check validates the shapes and that every value is finite.
func (x *Index) check() error {
	n := len(x.Paths)
	switch {
	case x.Dim < 1 || x.Dim > maxIndexDim:
		return fmt.Errorf("gallery: index: dimension %d outside [1, %d]", x.Dim, maxIndexDim)
	case n < 1:
		return errors.New("gallery: index: no embeddings")
	case len(x.Labels) != n:
		return fmt.Errorf("gallery: index: %d paths but %d labels", n, len(x.Labels))
	case len(x.Embeddings) != n*x.Dim:
		return fmt.Errorf("gallery: index: %d embedding values, want %d rows x %d = %d", len(x.Embeddings), n, x.Dim, n*x.Dim)
	}
	for i, v := range x.Embeddings {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("gallery: index: embedding row %d (%q) column %d is %v", i/x.Dim, x.Paths[i/x.Dim], i%x.Dim, v)
		}
	}
	return nil
}

// indexMeta is the JSON metadata section of an index file.
type indexMeta struct {
	Paths  []string `json:"paths"`
	Labels []string `json:"labels"`
	Model  Model    `json:"model"`
}

// Write writes idx to path in the index file format (see the format comment above),
// atomically: a temporary file in the same folder, fsync, rename; on error path is untouched.
// The embeddings are streamed, not copied.
func Write(path string, idx *Index) error {
	if err := idx.check(); err != nil {
		return err
	}
	meta, err := json.Marshal(indexMeta{Paths: idx.Paths, Labels: idx.Labels, Model: idx.Model})
	if err != nil {
		return fmt.Errorf("gallery: index %q: %w", path, err)
	}
	var hdr [indexHeaderSize]byte
	copy(hdr[:], indexMagic)
	binary.LittleEndian.PutUint32(hdr[8:], indexVersion)
	binary.LittleEndian.PutUint64(hdr[16:], uint64(idx.Dim))
	binary.LittleEndian.PutUint64(hdr[24:], uint64(idx.Len()))
	binary.LittleEndian.PutUint64(hdr[32:], uint64(len(meta)))
	err = atomicfile.Write(path, "gallery index", func(w io.Writer) error {
		crc := crc32.New(castagnoli)
		mw := io.MultiWriter(w, crc)
		if _, err := mw.Write(hdr[:]); err != nil {
			return err
		}
		if err := f32le.Write(mw, idx.Embeddings); err != nil {
			return err
		}
		if _, err := mw.Write(meta); err != nil {
			return err
		}
		var tr [indexTrailerSize]byte
		copy(tr[:], indexTrailerMagic)
		binary.LittleEndian.PutUint32(tr[8:], crc.Sum32())
		_, err := w.Write(tr[:])
		return err
	})
	if err != nil {
		return fmt.Errorf("gallery: index: %w", err)
	}
	return nil
}

// Open reads the index file at path, checking its format version, its length against the
// header (a torn write) and its checksum (corruption). Problems with the file are *IndexError
// values naming it. The embeddings are read into one (N, D) slice through a small buffer.
func Open(path string) (*Index, error) {
	f, err := data.OpenRegular(path, 1<<62)
	if err != nil {
		return nil, fmt.Errorf("gallery: index: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("gallery: index: %w", err)
	}
	bad := func(format string, args ...any) error {
		return &IndexError{Path: path, Err: fmt.Errorf(format, args...)}
	}
	if fi.IsDir() {
		return nil, bad("is a directory, want an index file written by `pipeline index`")
	}
	size := fi.Size()
	var hdr [indexHeaderSize]byte
	if n, _ := io.ReadFull(f, hdr[:]); n < len(indexMagic) || string(hdr[:len(indexMagic)]) != indexMagic {
		return nil, bad("not a gallery index (no \\x89GLIDX magic): build one with `pipeline index`")
	}
	if size < indexHeaderSize+indexTrailerSize {
		return nil, bad("truncated (torn write?): %d bytes, shorter than the header and trailer", size)
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != indexVersion {
		return nil, bad("format version %d, this build reads version %d: rebuild the index with `pipeline index`", v, indexVersion)
	}
	if fl := binary.LittleEndian.Uint32(hdr[12:]); fl != 0 {
		return nil, bad("unknown flags %#x in the header", fl)
	}
	dim, n, mlen := binary.LittleEndian.Uint64(hdr[16:]), binary.LittleEndian.Uint64(hdr[24:]), binary.LittleEndian.Uint64(hdr[32:])
	if dim < 1 || dim > maxIndexDim || n < 1 {
		return nil, bad("header has dimension %d and %d embeddings, want dimension in [1, %d] and at least 1", dim, n, maxIndexDim)
	}
	// The header's sizes must add up to the file's length (compared without overflow).
	body := uint64(size) - indexHeaderSize - indexTrailerSize
	if n > body/4/dim || mlen > body || 4*n*dim+mlen > body {
		return nil, bad("truncated (torn write?): %d bytes, the header describes %d embeddings of dimension %d and %d bytes of metadata",
			size, n, dim, mlen)
	}
	if want := 4*n*dim + mlen + indexHeaderSize + indexTrailerSize; uint64(size) != want {
		return nil, bad("%d bytes, the header says %d: trailing bytes or a corrupt header", size, want)
	}
	crc := crc32.New(castagnoli)
	crc.Write(hdr[:])
	r := io.TeeReader(bufio.NewReaderSize(f, ioChunk), crc)
	emb := make([]float32, n*dim)
	if err := f32le.Read(r, emb); err != nil {
		return nil, bad("reading the embeddings: %v", err)
	}
	meta := make([]byte, mlen)
	if _, err := io.ReadFull(r, meta); err != nil {
		return nil, bad("reading the metadata: %v", err)
	}
	sum := crc.Sum32()
	var tr [indexTrailerSize]byte
	if _, err := io.ReadFull(r, tr[:]); err != nil {
		return nil, bad("reading the trailer: %v", err)
	}
	if string(tr[:8]) != indexTrailerMagic {
		return nil, bad("no trailer (torn write?): the file is corrupt or was not completely written")
	}
	if got := binary.LittleEndian.Uint32(tr[8:]); got != sum {
		return nil, bad("checksum mismatch (stored %08x, computed %08x): the file is corrupt", got, sum)
	}
	var m indexMeta
	if err := json.Unmarshal(meta, &m); err != nil {
		return nil, bad("metadata: %v", err)
	}
	x := &Index{Dim: int(dim), Embeddings: emb, Paths: m.Paths, Labels: m.Labels, Model: m.Model}
	if len(m.Paths) != int(n) || len(m.Labels) != int(n) {
		return nil, bad("%d embeddings but %d paths and %d labels", n, len(m.Paths), len(m.Labels))
	}
	if err := x.check(); err != nil {
		return nil, bad("%v", strings.TrimPrefix(err.Error(), "gallery: index: "))
	}
	return x, nil
}

// Neighbor is one search result: a gallery row and its distance to the query.
type Neighbor struct {
	Row      int     // gallery row: Index.Paths[Row], Index.Labels[Row]
	Distance float64 // cosine distance 1 - cos(query, row), in [0, 2]
}

// searchBufferBytes bounds Search's block of query-gallery dot products.
const searchBufferBytes = 8 << 20

// Search returns, for each of the nq queries (row-major (nq, Dim) float32), its min(k, N)
// nearest gallery rows, nearest first, by cosine distance 1 - cos(query, row) (the order of the
// Euclidean distance between L2-normalized rows; a zero row or query is at distance 1 from
// everything), ties broken by the lower row. The search is exact: the gallery is scanned in
// blocks of rows (one range per core), one float32 matrix product (internal/matmul) per block of
// queries and block of gallery rows, keeping a bounded max-heap of the k best per query, so memory
// is O(cores·nq·k + nq·D + N) plus an 8 MiB block per core, never (nq, N). k < 1, a wrong number of values or a non-finite query is an error.
func (x *Index) Search(queries []float32, nq, k int) ([][]Neighbor, error) {
	d, n := x.Dim, x.Len()
	switch {
	case k < 1:
		return nil, fmt.Errorf("gallery: search: k = %d, want >= 1", k)
	case nq < 0 || len(queries) != nq*d:
		return nil, fmt.Errorf("gallery: search: %d query values for %d queries of dimension %d (the index's)", len(queries), nq, d)
	case n < 1 || len(x.Embeddings) != n*d:
		return nil, fmt.Errorf("gallery: search: index with %d embedding values for %d rows of dimension %d", len(x.Embeddings), n, d)
	}
	for i, v := range queries {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("gallery: search: query %d column %d is %v", i/d, i%d, v)
		}
	}
	// Queries are scaled by a power of two (exactly) so that their dot products cannot overflow.
	qs := make([]float32, len(queries))
	qinv := make([]float64, nq)
	for q := range nq {
		src, dst := queries[q*d:(q+1)*d], qs[q*d:(q+1)*d]
		var m float32
		for _, v := range src {
			m = max(m, float32(math.Abs(float64(v))))
		}
		_, e := math.Frexp(float64(m))
		for j, v := range src {
			dst[j] = float32(math.Ldexp(float64(v), -e))
		}
		qinv[q] = rowops.InvNorm(dst)
	}

	kk := min(k, n)
	qRows := x.queryRows
	if qRows <= 0 {
		qRows = min(max(nq, 1), 256)
	}
	bRows := x.blockRows
	if bRows <= 0 {
		bRows = max(searchBufferBytes/(4*qRows), 64)
	}
	bRows = min(bRows, n)
	// The gallery is split into one contiguous range per core; each keeps its own heaps, merged
	// at the end (the order of (distance, row) is total, so the result does not depend on it).
	workers := min(runtime.GOMAXPROCS(0), (n+bRows-1)/bRows)
	per := (n + workers - 1) / workers
	parts := make([][]*rowops.TopK[int], workers)
	ginv := make([]float64, n)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*per, min((w+1)*per, n)
		wg.Go(func() {
			// The inverse norms of this range (as costly as the product for few queries).
			for i := lo; i < hi; i++ {
				ginv[i] = rowops.InvNorm(x.Embeddings[i*d : (i+1)*d])
			}
			heaps := make([]*rowops.TopK[int], nq)
			for q := range heaps {
				heaps[q] = rowops.NewTopK[int](kk)
			}
			scores := make([]float32, min(qRows, max(nq, 1))*bRows)
			for q0 := 0; q0 < nq; q0 += qRows {
				m := min(qRows, nq-q0)
				for g0 := lo; g0 < hi; g0 += bRows {
					b := min(bRows, hi-g0)
					matmul.ABt(scores, b, qs[q0*d:(q0+m)*d], m, x.Embeddings[g0*d:(g0+b)*d], b, d)
					for r := range m {
						h, qi := heaps[q0+r], qinv[q0+r]
						for j, s := range scores[r*b : (r+1)*b] {
							h.Push(cosineDistance(s, qi, ginv[g0+j]), g0+j)
						}
					}
				}
			}
			parts[w] = heaps
		})
	}
	wg.Wait()
	for i, v := range ginv {
		if v != 0 && v < 1e-18 {
			return nil, fmt.Errorf("gallery: search: gallery row %d has norm %.3g: rows must be L2-normalized (New does it)", i, 1/v)
		}
	}
	out := make([][]Neighbor, nq)
	for q := range out {
		h := parts[0][q]
		for _, p := range parts[1:] {
			dist, row := p[q].Sorted()
			for i := range dist {
				h.Push(dist[i], row[i])
			}
		}
		dist, row := h.Sorted()
		out[q] = make([]Neighbor, len(dist))
		for i := range dist {
			out[q][i] = Neighbor{Row: row[i], Distance: dist[i]}
		}
	}
	return out, nil
}

// cosineDistance is 1 - dot·qinv·ginv clamped to [0, 2], where dot is the dot product of a query
// and a gallery row and qinv, ginv the inverses of their L2 norms (0 for zero rows).
func cosineDistance(dot float32, qinv, ginv float64) float64 {
	return min(max(1-float64(dot)*qinv*ginv, 0), 2)
}

// FromDataset returns the Index of a dataset's embeddings (len(ds.Items), dim), with the
// items' absolute paths and class names as labels, normalizing emb in place (see New).
func FromDataset(ds *data.Dataset, emb []float32, dim int, model Model) (*Index, error) {
	paths := make([]string, len(ds.Items))
	labels := make([]string, len(ds.Items))
	for i, it := range ds.Items {
		p, err := filepath.Abs(ds.Resolve(i))
		if err != nil {
			return nil, fmt.Errorf("gallery: index: %w", err)
		}
		paths[i], labels[i] = filepath.ToSlash(p), it.Class
	}
	return New(emb, dim, paths, labels, model)
}
