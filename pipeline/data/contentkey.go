package data

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
)

// ContentKey returns a hex SHA-256 of Fingerprint (the class names, the items' paths and labels)
// and of the bytes of every item's file, in item order: a cache-key part that changes when any
// image changes, also under the same name (another --data folder with the same layout, an edited
// image). Files are hashed whole by workers goroutines (SHA-256 uses the CPU's SHA extensions
// where present: about 0.3 s for CUB-100's 5902 images, 66 MB, from the page cache on 2 cores).
// A file that cannot be read (missing, not a regular file, too large) contributes its error, so
// the key is still defined and extraction reports the file. The error is ctx's when it is
// cancelled.
func (d *Dataset) ContentKey(ctx context.Context, workers int) (string, error) {
	workers = max(workers, 1)
	sums := make([][sha256.Size]byte, len(d.Items))
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for i := range next {
				b, err := readFile(d.Resolve(i), buf)
				if err != nil {
					sums[i] = sha256.Sum256([]byte("unreadable: " + err.Error()))
					continue
				}
				sums[i] = sha256.Sum256(b)
				buf = b[:0]
			}
		}()
	}
	var err error
feed:
	for i := range d.Items {
		select {
		case next <- i:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(d.Fingerprint()))
	for i := range sums {
		h.Write(sums[i][:])
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
