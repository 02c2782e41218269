package data

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/grouploss/pipeline/internal/atomicfile"
	"github.com/grouploss/pipeline/internal/f32le"
)

// ErrCorruptCache is wrapped by LoadFeatures errors for files that are truncated, damaged or not
// feature caches of this version: the caller should rebuild them.
var ErrCorruptCache = errors.New("corrupt feature cache")

// Feature cache file layout, all integers little-endian:
//
//	magic    [8]byte "GLFEAT\x00\n"
//	version  uint32  (1)
//	n, d     uint64, uint64
//	metaLen  uint32
//	meta     metaLen bytes of JSON (an object of strings)
//	feats    n*d float32
//	checksum [32]byte SHA-256 of everything before it
const (
	cacheMagic   = "GLFEAT\x00\n"
	cacheVersion = 1
	cacheHeader  = 8 + 4 + 8 + 8 + 4
	maxMetaLen   = 1 << 24
)

// CacheKey returns the hex SHA-256 of the parts (each length-prefixed, so ("ab", "c") and ("a", "bc")
// differ): a file-name-safe key for cached features.
func CacheKey(parts ...string) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.LittleEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		io.WriteString(h, p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// SaveFeatures writes an (n, d) row-major float32 matrix and string metadata to path atomically: a
// temporary file in the same folder is written, synced and renamed over path.
func SaveFeatures(path string, feats []float32, n, d int, meta map[string]string) (err error) {
	if n < 0 || d < 0 || len(feats) != n*d {
		return fmt.Errorf("data: save features %q: %d floats for shape (%d, %d)", path, len(feats), n, d)
	}
	if meta == nil {
		meta = map[string]string{}
	}
	mj, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("data: save features %q: %w", path, err)
	}
	if len(mj) > maxMetaLen {
		return fmt.Errorf("data: save features %q: metadata of %d bytes over %d", path, len(mj), maxMetaLen)
	}
	// The file ends with the SHA-256 of everything before it.
	err = atomicfile.Write(path, "feature cache", func(f io.Writer) error {
		h := sha256.New()
		w := io.MultiWriter(f, h)
		hdr := make([]byte, cacheHeader)
		copy(hdr, cacheMagic)
		binary.LittleEndian.PutUint32(hdr[8:], cacheVersion)
		binary.LittleEndian.PutUint64(hdr[12:], uint64(n))
		binary.LittleEndian.PutUint64(hdr[20:], uint64(d))
		binary.LittleEndian.PutUint32(hdr[28:], uint32(len(mj)))
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		if _, err := w.Write(mj); err != nil {
			return err
		}
		if err := f32le.Write(w, feats); err != nil {
			return err
		}
		_, err := f.Write(h.Sum(nil))
		return err
	})
	if err != nil {
		return fmt.Errorf("data: save features: %w", err)
	}
	return nil
}

// LoadFeatures reads a file written by SaveFeatures: the (n, d) row-major float32 matrix and its
// metadata. A missing file gives an error wrapping fs.ErrNotExist; a truncated, damaged or foreign
// file one wrapping ErrCorruptCache.
func LoadFeatures(path string) (feats []float32, n, d int, meta map[string]string, err error) {
	return loadFeatures(path, -1, -1)
}

// LoadFeaturesShape is LoadFeatures for a cache that must hold an (n, d) matrix: a file of another
// shape, or whose size is not the one its header implies, is refused from its header, before its
// body is read (an oversized cache file was read whole into memory).
func LoadFeaturesShape(path string, n, d int) (feats []float32, meta map[string]string, err error) {
	feats, _, _, meta, err = loadFeatures(path, n, d)
	return feats, meta, err
}

func loadFeatures(path string, wantN, wantD int) (feats []float32, n, d int, meta map[string]string, err error) {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("data: load features %q: %w: %s", path, ErrCorruptCache, fmt.Sprintf(format, args...))
	}
	f, err := OpenRegular(path, 1<<62)
	if err != nil {
		return nil, 0, 0, nil, fmt.Errorf("data: load features: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, 0, nil, fmt.Errorf("data: load features: %w", err)
	}
	var hdr [cacheHeader]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return nil, 0, 0, nil, corrupt("truncated: %d bytes", fi.Size())
	}
	hn, hd := binary.LittleEndian.Uint64(hdr[12:]), binary.LittleEndian.Uint64(hdr[20:])
	if wantN >= 0 && (hn != uint64(wantN) || hd != uint64(wantD)) {
		return nil, 0, 0, nil, corrupt("shape (%d, %d), want (%d, %d)", hn, hd, wantN, wantD)
	}
	if hn > 1<<40 || hd > 1<<40 || (hn != 0 && hd > uint64(fi.Size())/hn) {
		return nil, 0, 0, nil, corrupt("header shape (%d, %d) does not fit in %d bytes", hn, hd, fi.Size())
	}
	if want := int64(cacheHeader) + int64(binary.LittleEndian.Uint32(hdr[28:])) + 4*int64(hn*hd) + sha256.Size; fi.Size() != want {
		return nil, 0, 0, nil, corrupt("%d bytes, want %d for shape (%d, %d)", fi.Size(), want, hn, hd)
	}
	b := make([]byte, fi.Size())
	copy(b, hdr[:])
	if _, err := io.ReadFull(f, b[cacheHeader:]); err != nil {
		return nil, 0, 0, nil, corrupt("read: %v", err)
	}
	if len(b) < cacheHeader+sha256.Size {
		return nil, 0, 0, nil, corrupt("truncated: %d bytes", len(b))
	}
	if string(b[:8]) != cacheMagic {
		return nil, 0, 0, nil, corrupt("bad magic %q", b[:8])
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != cacheVersion {
		return nil, 0, 0, nil, corrupt("version %d, want %d", v, cacheVersion)
	}
	un, ud := binary.LittleEndian.Uint64(b[12:]), binary.LittleEndian.Uint64(b[20:])
	metaLen := uint64(binary.LittleEndian.Uint32(b[28:]))
	// Bound n*d by the file size before multiplying, so a damaged header cannot overflow.
	avail := uint64(len(b))
	if un > 1<<40 || ud > 1<<40 || (un != 0 && ud > avail/un) || metaLen > maxMetaLen {
		return nil, 0, 0, nil, corrupt("header shape (%d, %d), metadata %d bytes do not fit in %d bytes", un, ud, metaLen, len(b))
	}
	want := uint64(cacheHeader) + metaLen + 4*un*ud + sha256.Size
	if avail != want {
		return nil, 0, 0, nil, corrupt("%d bytes, want %d for shape (%d, %d)", len(b), want, un, ud)
	}
	body := b[:len(b)-sha256.Size]
	if sum := sha256.Sum256(body); string(sum[:]) != string(b[len(body):]) {
		return nil, 0, 0, nil, corrupt("checksum mismatch")
	}
	if err := json.Unmarshal(body[cacheHeader:cacheHeader+metaLen], &meta); err != nil {
		return nil, 0, 0, nil, corrupt("metadata: %v", err)
	}
	raw := body[cacheHeader+metaLen:]
	n, d = int(un), int(ud)
	feats = make([]float32, n*d)
	for i := range feats {
		feats[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return feats, n, d, meta, nil
}
