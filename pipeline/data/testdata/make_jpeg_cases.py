#!/usr/bin/env python3
"""Writes the small JPEGs of libjpeg_test.go with PIL (Debian's python3-pil):
  /usr/bin/python3 testdata/make_jpeg_cases.py
cmyk.jpg: an Adobe CMYK JPEG (libjpeg-turbo's path declines it, image/jpeg decodes it);
progressive.jpg: a progressive 4:2:0 JPEG (both decoders read it)."""
import numpy as np
from PIL import Image

y, x = np.mgrid[0:29, 0:37]
rgb = np.stack([(x * 37 + y * 11) % 256, (x * x + 3 * y * y) % 256, (x * 5 + 128) % 256], -1).astype(np.uint8)
Image.fromarray(rgb, "RGB").convert("CMYK").save("testdata/cmyk.jpg", quality=90)
Image.fromarray(rgb, "RGB").save("testdata/progressive.jpg", quality=90, progressive=True, subsampling=2)
