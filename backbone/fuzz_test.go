package backbone

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"testing"

	"github.com/grouploss/pipeline/internal/onnxpb"
)

// FuzzInspectBytes feeds arbitrary bytes to the model-loading path (onnxpb.Unmarshal's checks,
// Inspect's shape inference and candidate search) and, when the model is accepted, to Cut.
// Properties: no panic; an error wraps onnxpb.ErrInvalid, ErrTooLarge or ErrExternalData (or is a
// *FeatureError from Cut); an accepted model inspects the same after re-serialization; a cut
// model passes onnxpb's checks itself and has one output "features" of a sane width. Seeds in
// testdata/fuzz/FuzzInspectBytes: the tiny CNN and hostile variants of it (cycles, dangling
// inputs, huge dims, external data, malformed attributes). `make fuzz` runs it for FUZZTIME.
func FuzzInspectBytes(f *testing.F) {
	tiny, err := os.ReadFile(tinyModel)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tiny)
	f.Fuzz(fuzzInspect)
}

func fuzzInspect(t *testing.T, data []byte) {
	{
		info, err := InspectBytes(data, "fuzz.onnx")
		if err != nil {
			if !errors.Is(err, onnxpb.ErrInvalid) && !errors.Is(err, onnxpb.ErrTooLarge) && !errors.Is(err, onnxpb.ErrExternalData) {
				t.Fatalf("error %v wraps none of onnxpb's sentinel errors", err)
			}
			return
		}
		if info.Nodes == 0 || len(info.Outputs) == 0 || len(info.SHA256) != 64 || info.Size != int64(len(data)) {
			t.Fatalf("accepted model described as %+v", info)
		}
		m, err := onnxpb.Unmarshal(data, "fuzz.onnx")
		if err != nil {
			t.Fatalf("InspectBytes accepted what Unmarshal refuses: %v", err)
		}
		again, err := onnxpb.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		info2, err := InspectBytes(again, "fuzz.onnx")
		if err != nil {
			t.Fatalf("re-serialized model refused: %v", err)
		}
		if !reflect.DeepEqual(info.Features, info2.Features) || info.Auto != info2.Auto ||
			!reflect.DeepEqual(info.Inputs, info2.Inputs) || !reflect.DeepEqual(info.Ops, info2.Ops) {
			t.Fatalf("re-serialized model inspects differently:\n%+v\n%+v", info, info2)
		}
		before, _ := onnxpb.Marshal(m)
		cut, ci, err := Cut(m, "")
		if after, _ := onnxpb.Marshal(m); !bytes.Equal(before, after) {
			t.Fatal("Cut modified its input model")
		}
		if err != nil {
			var fe *FeatureError
			if !errors.As(err, &fe) && !errors.Is(err, onnxpb.ErrInvalid) && !errors.Is(err, onnxpb.ErrTooLarge) {
				t.Fatalf("Cut error %v is neither a *FeatureError nor wraps an onnxpb sentinel", err)
			}
			return
		}
		if ci.Dim <= 0 || int64(ci.Dim) > onnxpb.MaxTensorElements || ci.Feature == "" {
			t.Fatalf("cut info %+v", ci)
		}
		out, err := onnxpb.Marshal(cut)
		if err != nil {
			t.Fatal(err)
		}
		cm, err := onnxpb.Unmarshal(out, "cut.onnx")
		if err != nil {
			t.Fatalf("the cut model fails onnxpb's checks: %v", err)
		}
		if outs := cm.GetGraph().GetOutput(); len(outs) != 1 || outs[0].GetName() != OutputName {
			t.Fatalf("cut model outputs %v", outs)
		}
	}
}
