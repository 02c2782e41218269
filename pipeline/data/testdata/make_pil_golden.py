#!/usr/bin/env python3
"""Writes pil_golden.json: PIL's bilinear resize of synthetic images and of a few CUB-100 JPEGs, the
reference for preprocess_test.go. Needs Debian's python3-pil and python3-numpy (PIL 9.4, libjpeg-turbo):
  /usr/bin/python3 testdata/make_pil_golden.py ../../../shared/data/cub100 > testdata/pil_golden.json
Each case stores 128 sampled output pixels (x, y, r, g, b) of the 8-bit RGB result. It also (re)writes
the two small JPEGs pattern_420.jpg and pattern_422.jpg, whose decoded pixels are cases too."""
import json, sys
import numpy as np
from PIL import Image

def pattern(w, h):
    # Same formula as syntheticPattern in preprocess_test.go.
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 37 + y * 11) % 256
    g = (x * x + 3 * y * y + x * y) % 256
    b = (128 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)).astype(np.int64) % 256
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8), "RGB")

def resize(img, mode, w, h, shorter):
    if mode == "resize":
        return img.resize((w, h), Image.BILINEAR)
    iw, ih = img.size  # torchvision Resize(shorter) then CenterCrop((h, w))
    if iw <= ih:
        nw, nh = shorter, int(shorter * ih / iw)
    else:
        nw, nh = int(shorter * iw / ih), shorter
    r = img.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - w) / 2.0)), int(round((nh - h) / 2.0))
    return r.crop((left, top, left + w, top + h))

def samples(img, rng, n=128):
    a = np.asarray(img)
    h, w = a.shape[:2]
    xs, ys = rng.integers(0, w, n), rng.integers(0, h, n)
    return [[int(x), int(y)] + [int(v) for v in a[y, x]] for x, y in zip(xs, ys)]

rng = np.random.default_rng(7)
cases = []
for sw, sh, mode, w, h, shorter in [(227, 227, "resize", 224, 224, 0), (40, 30, "resize", 224, 224, 0),
                                    (500, 375, "resize", 224, 224, 0), (300, 200, "resize_center_crop", 224, 224, 256),
                                    (64, 96, "resize_center_crop", 32, 48, 50)]:
    out = resize(pattern(sw, sh), mode, w, h, shorter)
    cases.append({"source": "pattern", "src_width": sw, "src_height": sh, "resize": mode, "width": w,
                  "height": h, "resize_shorter": shorter, "samples": samples(out, rng)})
# Small JPEGs committed beside this script (odd sizes, 4:2:0 and 4:2:2 chroma): PIL's decoded pixels.
here = sys.path[0]
for name, sampling in [("pattern_420.jpg", 2), ("pattern_422.jpg", 1)]:
    pattern(37, 29).save(f"{here}/{name}", quality=90, subsampling=sampling)
    out = Image.open(f"{here}/{name}").convert("RGB")
    cases.append({"source": "testdata/" + name, "resize": "resize", "width": 37, "height": 29,
                  "resize_shorter": 0, "samples": samples(out, rng)})
root = sys.argv[1]
for rel in ["images/Black_footed_Albatross/0000.jpg", "images/Groove_billed_Ani/0005.jpg",
            "images/Red_winged_Blackbird/0010.jpg"]:
    out = resize(Image.open(f"{root}/{rel}").convert("RGB"), "resize", 224, 224, 0)
    cases.append({"source": rel, "resize": "resize", "width": 224, "height": 224, "resize_shorter": 0,
                  "samples": samples(out, rng)})
json.dump({"about": "PIL bilinear resize of synthetic patterns and CUB-100 JPEGs: sampled output pixels [x, y, r, g, b]; made by make_pil_golden.py", "pil": Image.__version__, "cases": cases}, sys.stdout)
