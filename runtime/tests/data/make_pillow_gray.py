"""Writes pillow-rgb16.png (16x16 random RGB pixels) and pillow-rgb16.L (Pillow's
convert("L") of it, raw bytes): the reference runtime/src/image.rs's grayscale is tested
against. Run with any Python that has Pillow: python make_pillow_gray.py"""
import pathlib
import random

from PIL import Image

here = pathlib.Path(__file__).parent
random.seed(1)
im = Image.new("RGB", (16, 16))
im.putdata([tuple(random.randrange(256) for _ in range(3)) for _ in range(256)])
im.save(here / "pillow-rgb16.png")
(here / "pillow-rgb16.L").write_bytes(im.convert("L").tobytes())
