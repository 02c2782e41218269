package dist

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"path/filepath"

	"github.com/grouploss/pipeline/pipeline/data"
)

// Job is the work of embedding a list of images with one model, cut into batches.
type Job struct {
	// ID names the job's subjects and messages. NewJob derives it from the model, the images and
	// the batch size, so submitting the same work twice gives the same ID (and the queue drops
	// the second copy).
	ID string
	// Model is the hex SHA-256 of the model file; workers refuse batches of another model.
	Model string
	// Items are the images in output order.
	Items     []WorkItem
	BatchSize int
}

// WorkItem is one image of a Job: its position in the job's output and its absolute path.
type WorkItem struct {
	Index int    `json:"index"`
	Path  string `json:"path"`
}

// NewJob returns the job of embedding the items idx of ds (in that order) with the model of
// SHA-256 modelSHA, in batches of batchSize images.
func NewJob(modelSHA string, ds *data.Dataset, idx []int, batchSize int) (Job, error) {
	if batchSize < 1 {
		return Job{}, fmt.Errorf("dist: batch size %d, want >= 1", batchSize)
	}
	if len(modelSHA) != 64 {
		return Job{}, fmt.Errorf("dist: model hash %q is not a hex SHA-256", modelSHA)
	}
	j := Job{Model: modelSHA, Items: make([]WorkItem, len(idx)), BatchSize: batchSize}
	h := sha256.New()
	h.Write([]byte(modelSHA))
	h.Write(binary.LittleEndian.AppendUint64(nil, uint64(batchSize)))
	for k, i := range idx {
		p, err := filepath.Abs(ds.Resolve(i))
		if err != nil {
			return Job{}, fmt.Errorf("dist: %w", err)
		}
		j.Items[k] = WorkItem{Index: k, Path: p}
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	j.ID = hex.EncodeToString(h.Sum(nil))[:20]
	return j, nil
}

// Batches returns the number of batches of the job.
func (j Job) Batches() int { return (len(j.Items) + j.BatchSize - 1) / j.BatchSize }

// Batch returns the work message of batch b.
func (j Job) Batch(b int) Work {
	lo, hi := b*j.BatchSize, min((b+1)*j.BatchSize, len(j.Items))
	return Work{Job: j.ID, Batch: b, Model: j.Model, Items: j.Items[lo:hi]}
}

// Work is a batch message on the work stream.
type Work struct {
	Job   string     `json:"job"`
	Batch int        `json:"batch"`
	Model string     `json:"model_sha256"`
	Items []WorkItem `json:"items"`
}

// Result is a batch's outcome on the results stream: the embeddings of its items (len(Items) x
// Dim, row-major) or, when an image could not be embedded, Error naming it.
type Result struct {
	Job        string     `json:"job"`
	Batch      int        `json:"batch"`
	Model      string     `json:"model_sha256"`
	Worker     string     `json:"worker"`
	Delivery   uint64     `json:"delivery"` // how many times the queue had delivered the batch
	Items      []WorkItem `json:"items"`
	Dim        int        `json:"dim"`
	Embeddings []float32  `json:"embeddings,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// msgID is the JetStream message ID of a batch (for work) or of its result: the server drops a
// second message with the same ID within the stream's duplicate window.
func msgID(job string, batch int) string { return fmt.Sprintf("%s.%d", job, batch) }
