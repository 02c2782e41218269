"""One tail + head training step in PyTorch, for comparing loss and gradients with ours.

usage: /usr/bin/python3 scripts/ref_tail_step.py --spec SPEC.json

SPEC.json (written by pipeline's TestTailStepMatchesPyTorch) names: "model" (a float ONNX model),
"from"/"to" (the cut and the feature tensor), "shape" (the cut's per-sample shape), "input" (the
batch of activations, a (batch, C*H*W) float32 .npy), "labels", "anchors" (0/1 per sample),
"head" (name -> .npy of the head's parameters: emb.weight [emb, in], emb.bias [1, emb],
cls.weight, cls.bias), "normalize", "temperature", "iterations", "scaling" and "ref"
(../shared/reference/ref_heads.py). The tail is bench_ref_tail.py's OnnxTail (BatchNormalization
folded into the Conv before it, as ours); the head is ref_heads.py's Head with our values, the
loss its Group Loss (gtg + NLL + cross-entropy), in float64 throughout (gtg is repeated here
with one dtype cast changed, see below).

Prints one JSON object: loss, and grads: name -> flat list, for every Conv weight of the tail (by
its ONNX initializer name) and the head's parameters. Exit code 3 when torch, numpy or onnx cannot
be imported.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_ref_tail as brt  # noqa: E402  (exits with code 3 when a module is missing)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def gtg(z, probs, y, anchors, iters):
    """ref_heads.py's gtg with the anchors' one-hot rows in the probabilities' dtype (the
    reference casts them to float32, which a float64 step cannot index-put)."""
    x = z - z.mean(1, keepdim=True)
    n = x.norm(dim=1)
    W = F.relu(x @ x.t() / torch.outer(n, n))
    P = probs.clone()
    P[anchors] = F.one_hot(y[anchors], probs.shape[1]).to(probs.dtype)
    for _ in range(iters):
        P = P * (W @ P)
        P = P / P.sum(1, keepdim=True)
    return P


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", required=True)
    a = ap.parse_args()
    with open(a.spec) as f:
        spec = json.load(f)
    ref = brt.import_reference(spec["ref"])
    torch.set_num_threads(2)
    tail = brt.OnnxTail(onnx.load(spec["model"]), spec["from"], spec["to"]).double()
    x = np.load(spec["input"]).astype(np.float64)
    n = x.shape[0]
    xb = torch.from_numpy(x).reshape(n, *[int(d) for d in spec["shape"]])
    y = torch.tensor(spec["labels"])
    anchors = torch.tensor([bool(v) for v in spec["anchors"]])
    hp = {k: torch.from_numpy(np.load(v).astype(np.float64)) for k, v in spec["head"].items()}
    head = ref.Head(hp["emb.weight"].shape[1], hp["emb.weight"].shape[0], hp["cls.weight"].shape[0]).double()
    with torch.no_grad():
        head.emb.weight.copy_(hp["emb.weight"])
        head.emb.bias.copy_(hp["emb.bias"].reshape(-1))
        head.cls.weight.copy_(hp["cls.weight"])
        head.cls.bias.copy_(hp["cls.bias"].reshape(-1))
    f = tail(xb).reshape(n, -1)
    if spec.get("normalize", True):
        f = F.normalize(f, dim=1)
    logits, z = head(f)
    T = float(spec["temperature"])
    P = gtg(z, F.softmax(logits / T, 1), y, anchors, int(spec["iterations"]))
    loss = float(spec["scaling"]) * F.nll_loss(torch.log(P + 1e-12), y) + F.cross_entropy(logits, y)
    loss.backward()
    grads = {}
    for op, ins, _, s in tail.steps:
        if op == "Conv":
            grads[s["w"]] = tail.params[s["w"]].grad.reshape(-1).tolist()
    for name, p in (("emb.weight", head.emb.weight), ("emb.bias", head.emb.bias),
                    ("cls.weight", head.cls.weight), ("cls.bias", head.cls.bias)):
        grads[name] = p.grad.reshape(-1).tolist()
    print(json.dumps({"loss": float(loss), "grads": grads, "torch_version": torch.__version__}))


if __name__ == "__main__":
    main()
