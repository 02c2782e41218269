package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/gob"
	"errors"
	"fmt"
	"os"

	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/train"
)

// ErrCorruptCheckpoint is returned for a torn or tampered checkpoint file.
var ErrCorruptCheckpoint = errors.New("pipeline: corrupt checkpoint")

const checkpointMagic = "GLCKPT1\n"

// Checkpoint is the trained head at one epoch: the parameters, the feature transform that
// precedes them, the optimizer state and where training stood.
type Checkpoint struct {
	Epoch     int
	Score     float64
	Params    []NamedTensor
	Center    []float32 // subtracted from the features before the head (may be empty)
	Normalize bool      // features L2-normalized before the head
	FlipTTA   bool      // features are the mean of the image's and its mirror's
	Classes   []int     // dataset labels of the classifier's outputs
	Optimizer train.OptimizerState
	Config    Config
}

// NamedTensor is one parameter of a checkpoint.
type NamedTensor struct {
	Name  string
	Shape []int
	Value []float64
}

// SaveCheckpoint writes c to path atomically: magic, gob payload, SHA-256 of the payload.
func SaveCheckpoint(path string, c *Checkpoint) error {
	var buf bytes.Buffer
	buf.WriteString(checkpointMagic)
	if err := gob.NewEncoder(&buf).Encode(c); err != nil {
		return fmt.Errorf("pipeline: checkpoint %q: %w", path, err)
	}
	sum := sha256.Sum256(buf.Bytes()[len(checkpointMagic):])
	buf.Write(sum[:])
	return onnxpb.WriteFileAtomic(path, buf.Bytes())
}

// LoadCheckpoint reads a checkpoint written by SaveCheckpoint, verifying its checksum.
func LoadCheckpoint(path string) (*Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pipeline: checkpoint: %w", err)
	}
	if len(b) < len(checkpointMagic)+sha256.Size || string(b[:len(checkpointMagic)]) != checkpointMagic {
		return nil, fmt.Errorf("%w: %q is not a checkpoint of this tool or is truncated", ErrCorruptCheckpoint, path)
	}
	payload := b[len(checkpointMagic) : len(b)-sha256.Size]
	if sum := sha256.Sum256(payload); !bytes.Equal(sum[:], b[len(b)-sha256.Size:]) {
		return nil, fmt.Errorf("%w: %q fails its checksum (torn write?)", ErrCorruptCheckpoint, path)
	}
	var c Checkpoint
	if err := gob.NewDecoder(bytes.NewReader(payload)).Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrCorruptCheckpoint, path, err)
	}
	return &c, nil
}
