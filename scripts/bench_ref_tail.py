"""Speed of a tail fine-tuning step in PyTorch (CPU), for `pipeline bench` (its tail section).

usage: /usr/bin/python3 scripts/bench_ref_tail.py --spec SPEC.json

`pipeline bench` writes SPEC.json and the files it names: "model" (the float backbone our engine
decodes the tail from: weights.DequantizeModel of the int8 MobileNetV2), "from"/"to" (the cut
tensor and the feature tensor), "shape" (the cut's per-sample shape, e.g. [160, 7, 7]), "input"
(the batch of activations at the cut, a (batch, C*H*W) float32 .npy), "output" (our tail's
output for it with the initial weights, (batch, features)), "labels" (the classifier ids of the
batch, contiguous per class), and the settings of the step: classes, emb, normalize, center,
optimizer (radam, adam or adamw), lr (head), backbone_lr, weight_decay, temperature,
iterations, scaling, anchors_per_class, steps, warmup, threads, ref (ref_heads.py).

The tail is built from the ONNX nodes between "from" and "to" (Conv with bias, Clip = ReLU6,
Relu, Add, GlobalAveragePool, ...; a BatchNormalization right after a Conv is folded into it, as
our engine does), its weights trainable. Its output on the batch is compared with ours
(forward_max_abs_diff): both sides run the same tail. A step is what `pipeline run
--train-blocks K` does per batch: tail forward, flatten, L2 normalization (and centering), the
reference head (Linear emb, Linear classifier) and Group Loss (gtg + NLL + cross-entropy) of
../shared/reference/ref_heads.py, imported from its folder (the module is run once on a tiny
temporary feature file so that its top level, which reads sys.argv, has something to load),
backward, and an optimizer step over two parameter groups (tail at backbone_lr, head at lr).

Prints one JSON object: ms_per_step, steps_per_s, cpu_ms_per_step (process CPU time, all
threads), steps, warmup, threads, torch_version, shapes, forward_max_abs_diff, first_loss. Exit code 3 when torch, numpy or onnx cannot be imported.
"""
import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

MISSING_MODULE = 3

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    import onnx
    from onnx import numpy_helper
except ImportError as e:  # pipeline bench reports the reference as skipped
    print(f"bench_ref_tail: {e}: install Debian's python3-torch and python3-onnx", file=sys.stderr)
    sys.exit(MISSING_MODULE)


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class OnnxTail(torch.nn.Module):
    """The float subgraph of an ONNX model that computes `dst` from `src`, as a torch module."""

    def __init__(self, model, src, dst):
        super().__init__()
        g = model.graph
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        consts = dict(inits)
        for n in g.node:
            if n.op_type == "Constant":
                consts[n.output[0]] = numpy_helper.to_array(attr(n, "value"))
        producer = {o: n for n in g.node for o in n.output}
        consumers = {}
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        # The nodes that compute dst from src, in graph order.
        needed, stack = set(), [dst]
        while stack:
            t = stack.pop()
            if t == src or t in consts or t == "":
                continue
            if t not in producer:
                raise SystemExit(f"bench_ref_tail: tensor {t!r} is not computed from {src!r}")
            n = producer[t]
            if id(n) not in needed:
                needed.add(id(n))
                stack.extend(n.input)
        nodes = [n for n in g.node if id(n) in needed]
        self.params = torch.nn.ParameterDict()
        self.steps = []  # (op, inputs, output, settings)
        folded = {}      # Conv output -> BN output it is folded into
        for n in nodes:
            if n.op_type == "BatchNormalization" and n.input[0] in producer and producer[n.input[0]].op_type == "Conv" \
                    and len(consumers.get(n.input[0], [])) == 1:
                folded[n.input[0]] = n
        key = lambda name: name.replace(".", "_")
        for n in nodes:
            op, ins, out = n.op_type, list(n.input), n.output[0]
            if op == "Conv":
                w = consts[ins[1]].astype(np.float32)
                b = consts[ins[2]].astype(np.float32) if len(ins) > 2 and ins[2] else np.zeros(w.shape[0], np.float32)
                if out in folded:  # W' = W s, B' = (B - mean) s + beta, s = gamma / sqrt(var + eps)
                    bn = folded[out]
                    gamma, beta, mean, var = (consts[i].astype(np.float32) for i in bn.input[1:5])
                    s = gamma / np.sqrt(var + attr(bn, "epsilon", 1e-5))
                    w, b = w * s[:, None, None, None], (b - mean) * s + beta
                    out = bn.output[0]
                if attr(n, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                    raise SystemExit(f"bench_ref_tail: Conv {n.name!r}: auto_pad is not supported here")
                kdims = len(w.shape) - 2
                pads = list(attr(n, "pads", [0] * 2 * kdims))
                self.params[key(ins[1])] = torch.nn.Parameter(torch.from_numpy(w.copy()))
                self.params[key(ins[1]) + "_bias"] = torch.nn.Parameter(torch.from_numpy(b.copy()))
                self.steps.append(("Conv", [ins[0]], out, dict(
                    w=key(ins[1]), b=key(ins[1]) + "_bias", stride=list(attr(n, "strides", [1] * kdims)),
                    dilation=list(attr(n, "dilations", [1] * kdims)), groups=attr(n, "group", 1),
                    pad_begin=pads[:kdims], pad_end=pads[kdims:])))
            elif op == "BatchNormalization":
                if n.input[0] in folded:
                    continue
                gamma, beta, mean, var = (torch.from_numpy(consts[i].astype(np.float32)) for i in ins[1:5])
                self.params[key(ins[1])] = torch.nn.Parameter(gamma)
                self.params[key(ins[2])] = torch.nn.Parameter(beta)
                self.steps.append((op, [ins[0]], out, dict(gamma=key(ins[1]), beta=key(ins[2]), mean=mean, var=var,
                                                            eps=attr(n, "epsilon", 1e-5))))
            elif op == "Clip":
                lo = float(consts[ins[1]]) if len(ins) > 1 and ins[1] else attr(n, "min", float("-inf"))
                hi = float(consts[ins[2]]) if len(ins) > 2 and ins[2] else attr(n, "max", float("inf"))
                self.steps.append((op, [ins[0]], out, dict(lo=lo, hi=hi)))
            elif op in ("Relu", "GlobalAveragePool", "Identity", "Dropout"):
                self.steps.append((op, [ins[0]], out, {}))
            elif op == "Flatten":
                self.steps.append((op, [ins[0]], out, dict(axis=attr(n, "axis", 1))))
            elif op in ("Add", "Sub", "Mul"):
                for i in ins:
                    if i in consts:
                        raise SystemExit(f"bench_ref_tail: {op} {n.name!r} with a constant operand is not supported here")
                self.steps.append((op, ins, out, {}))
            else:
                raise SystemExit(f"bench_ref_tail: op {op!r} (node {n.name!r}) is not supported here")
        self.src, self.dst = src, dst

    def forward(self, x):
        env = {self.src: x}
        p = self.params
        for op, ins, out, a in self.steps:
            v = [env[i] for i in ins]
            if op == "Conv":
                x = v[0]
                if a["pad_begin"] != a["pad_end"]:
                    pad = []
                    for b, e in zip(reversed(a["pad_begin"]), reversed(a["pad_end"])):
                        pad += [b, e]
                    x, padding = F.pad(x, pad), 0
                else:
                    padding = a["pad_begin"]
                conv = F.conv1d if len(a["stride"]) == 1 else F.conv2d
                y = conv(x, p[a["w"]], p[a["b"]], a["stride"], padding, a["dilation"], a["groups"])
            elif op == "BatchNormalization":
                y = F.batch_norm(v[0], a["mean"], a["var"], p[a["gamma"]], p[a["beta"]], False, 0.0, a["eps"])
            elif op == "Clip":
                y = F.hardtanh(v[0], a["lo"], a["hi"]) if a["lo"] > float("-inf") and a["hi"] < float("inf") \
                    else torch.clamp(v[0], a["lo"] if a["lo"] > float("-inf") else None, a["hi"] if a["hi"] < float("inf") else None)
            elif op == "Relu":
                y = F.relu(v[0])
            elif op == "GlobalAveragePool":
                y = v[0].mean(dim=tuple(range(2, v[0].dim())), keepdim=True)
            elif op in ("Identity", "Dropout"):
                y = v[0]
            elif op == "Flatten":
                y = torch.flatten(v[0], a["axis"]) if a["axis"] > 0 else v[0].reshape(1, -1)
            elif op == "Add":
                y = v[0] + v[1]
            elif op == "Sub":
                y = v[0] - v[1]
            else:
                y = v[0] * v[1]
            env[out] = y
        return env[self.dst]


def import_reference(path):
    """Imports ref_heads.py from its folder. Its top level loads the features named by sys.argv
    and evaluates them ('none'): it gets 4 tiny classes, with its output sent to stderr."""
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.splitext(os.path.basename(path))[0]
    with tempfile.TemporaryDirectory() as tmp:
        feats, lst = os.path.join(tmp, "feats.f32"), os.path.join(tmp, "list.txt")
        labels = [c for c in range(4) for _ in range(3)]
        np.random.default_rng(0).standard_normal((len(labels), 8), dtype=np.float32).astype("<f4").tofile(feats)
        with open(lst, "w") as f:
            f.writelines(f"img{i}.jpg {l}\n" for i, l in enumerate(labels))
        saved_argv, saved_path = sys.argv, list(sys.path)
        sys.argv = [path, feats, lst, "8", "2", "none"]
        sys.path.insert(0, folder)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return __import__(name)
        finally:
            sys.argv, sys.path[:] = saved_argv, saved_path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", required=True, help="the JSON spec `pipeline bench` writes")
    a = ap.parse_args()
    with open(a.spec) as f:
        spec = json.load(f)

    ref = import_reference(spec["ref"])
    torch.set_num_threads(int(spec.get("threads", 2)))
    torch.manual_seed(0)

    tail = OnnxTail(onnx.load(spec["model"]), spec["from"], spec["to"])
    x = np.load(spec["input"])
    want = np.load(spec["output"])
    n = x.shape[0]
    shape = [int(d) for d in spec["shape"]]
    if int(np.prod(shape)) != x.shape[1]:
        raise SystemExit(f"bench_ref_tail: shape {shape} of {spec['from']!r} does not hold {x.shape[1]} values per sample")
    xb = torch.from_numpy(x).reshape(n, *shape)
    y = torch.tensor(spec["labels"])

    with torch.no_grad():
        got = tail(xb).reshape(n, -1).numpy()
    diff = float(np.max(np.abs(got - want)))

    feat = got.shape[1]
    head = ref.Head(feat, int(spec["emb"]), int(spec["classes"]))
    center = torch.zeros(feat) if spec.get("center") else None
    groups = [{"params": list(tail.parameters()), "lr": spec["backbone_lr"]},
              {"params": list(head.parameters()), "lr": spec["lr"]}]
    kind = spec.get("optimizer", "radam")
    if kind == "radam":
        opt = torch.optim.RAdam(groups, weight_decay=spec["weight_decay"])
    elif kind == "adam":
        opt = torch.optim.Adam(groups, weight_decay=spec["weight_decay"])
    elif kind == "adamw":
        opt = torch.optim.AdamW(groups, weight_decay=spec["weight_decay"])
    else:
        raise SystemExit(f"bench_ref_tail: unknown optimizer {kind!r}")
    anchors = torch.zeros(n, dtype=torch.bool)
    for c in y.unique():
        anchors[(y == c).nonzero()[:int(spec["anchors_per_class"]), 0]] = True
    T, iters, scaling = float(spec["temperature"]), int(spec["iterations"]), float(spec["scaling"])

    def step():
        f = tail(xb).reshape(n, -1)
        if center is not None:
            f = f - center
        if spec.get("normalize", True):
            f = F.normalize(f, dim=1)
        logits, z = head(f)
        P = ref.gtg(z, F.softmax(logits / T, 1), y, anchors, iters)
        loss = scaling * F.nll_loss(torch.log(P + 1e-12), y) + F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss)

    first = step()
    for _ in range(int(spec["warmup"]) - 1):
        step()
    steps = int(spec["steps"])
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({
        "ms_per_step": 1000 * dt / steps,
        "steps_per_s": steps / dt,
        "cpu_ms_per_step": 1000 * cpu / steps,
        "steps": steps,
        "warmup": max(1, int(spec["warmup"])),
        "seconds": dt,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "shapes": {"batch": n, "activation": shape, "features": feat, "emb": int(spec["emb"]),
                   "classes": int(spec["classes"]), "tail_params": sum(p.numel() for p in tail.parameters()),
                   "tail_layers": [op for op, _, _, _ in tail.steps]},
        "forward_max_abs_diff": diff,
        "first_loss": first,
        "script": "scripts/bench_ref_tail.py",
        "reference": os.path.abspath(spec["ref"]),
    }))


if __name__ == "__main__":
    main()
