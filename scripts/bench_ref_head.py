"""Speed of the reference PyTorch Group Loss head (../shared/reference/ref_heads.py), for `pipeline bench`.

usage: /usr/bin/python3 scripts/bench_ref_head.py [--ref PATH] [--epochs N] [--warmup N] [--per-class N]

The reference is not copied: its source text is executed up to its `for kind in losses:` line (the
part that defines Head, gtg, batches and train and sets torch.set_num_threads(2)), with sys.argv
pointing at a temporary file of random 1280-d features: 50 training classes x --per-class samples
(59 ~ the CUB-100 training split) plus 2 tiny test classes, so the reference's evaluation after
training is cheap. Its own train('group') is then timed: its `dt` covers the training loop only
(batch sampling, forward, Group Loss, backward, Adam step) at the reference's settings: 6 classes x
9 samples per batch, 1280 -> 512 embedding, T=24, 1 iteration, 2 anchors per class.

Prints one JSON object: steps_per_s, ms_per_step, steps, seconds, threads, torch version.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

DIM, TRAIN_CLASSES, TEST_CLASSES, TEST_PER_CLASS = 1280, 50, 2, 4


def default_ref():
    shared = os.environ.get("PIPELINE_SHARED_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
    return os.path.join(shared, "reference", "ref_heads.py")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default=default_ref(), help="path of ref_heads.py")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (50 steps each at the defaults)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    ap.add_argument("--per-class", type=int, default=59, help="training samples per class")
    a = ap.parse_args()

    src = open(a.ref).read()
    cut = src.find("\nfor kind in losses:")
    if cut < 0:
        sys.exit(f"bench_ref_head: {a.ref!r} has no `for kind in losses:` line")

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        feats_path, list_path = os.path.join(tmp, "feats.f32"), os.path.join(tmp, "list.txt")
        labels = [c for c in range(TRAIN_CLASSES) for _ in range(a.per_class)]
        labels += [TRAIN_CLASSES + c for c in range(TEST_CLASSES) for _ in range(TEST_PER_CLASS)]
        rng.standard_normal((len(labels), DIM), dtype=np.float32).astype("<f4").tofile(feats_path)
        with open(list_path, "w") as f:
            f.writelines(f"img{i}.jpg {l}\n" for i, l in enumerate(labels))
        saved = sys.argv
        sys.argv = [a.ref, feats_path, list_path, str(DIM), str(TRAIN_CLASSES), "group"]
        ns = {"__name__": "ref_heads", "__file__": a.ref}
        try:
            exec(compile(src[:cut], a.ref, "exec"), ns)
        finally:
            sys.argv = saved

    import torch
    if a.warmup > 0:
        ns["train"]("group", epochs=a.warmup)
    _, dt, steps = ns["train"]("group", epochs=a.epochs)
    print(json.dumps({
        "steps_per_s": steps / dt,
        "ms_per_step": 1000 * dt / steps,
        "steps": steps,
        "seconds": dt,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "script": "scripts/bench_ref_head.py",
        "reference": os.path.abspath(a.ref),
    }))


if __name__ == "__main__":
    main()
