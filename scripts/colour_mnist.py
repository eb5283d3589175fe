"""Colour MNIST at 32x32, and a PyTorch teacher for it: the colour image-folder case of issue 6.

    ~/.cache/torch-venv/bin/python scripts/colour_mnist.py \
        --subset data/mnist-subset --full ../shared/data/mnist --out results/onnx-teachers/colour

Every MNIST digit is centred on a 32x32 canvas (2 px of border), its strokes painted in a
random bright colour over a random dark background, with Gaussian noise (sigma 12): the digit
is the label, the colours are nuisance a model must learn to ignore. Writes

  folder/train/<digit>/NNNNN.png, folder/test/<digit>/NNNNN.png
      the shipped subset's 10,000 training and 2,000 test images, coloured (seed 1)
  teacher.onnx
      a CNN trained by PyTorch on all 60,000 MNIST training images, coloured with other draws
      (seed 2), exported with torch.onnx.export: input `image` [N, 3, 32, 32] (NCHW, pixels
      (p / 255 - 0.5) / 0.5, so distil with --teacher-mean 0.5 --teacher-std 0.5), output
      `logits` [N, 10]

and prints the teacher's errors on the folder's test images by PyTorch's own forward pass.
"""

import argparse
import gzip
import pathlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

MEAN, STD = 0.5, 0.5


def idx(data, name):
    with gzip.open(data / name) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def colour(digits, seed):
    """[N, 28, 28] gray digits -> [N, 32, 32, 3] uint8 colour images."""
    rng = np.random.default_rng(seed)
    n = len(digits)
    fg = rng.integers(100, 256, (n, 1, 1, 3)).astype(np.float32)
    bg = rng.integers(0, 91, (n, 1, 1, 3)).astype(np.float32)
    a = np.zeros((n, 32, 32, 1), np.float32)
    a[:, 2:30, 2:30, 0] = digits / 255.0
    img = bg * (1 - a) + fg * a + rng.normal(0, 12, (n, 32, 32, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def tensor(images):
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return (x - MEAN) / STD


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 5, padding=2)
        self.c2 = nn.Conv2d(16, 32, 5)
        self.f1 = nn.Linear(32 * 6 * 6, 128)
        self.f2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2).flatten(1)
        return self.f2(F.relu(self.f1(x)))


def write_folder(root, images, labels):
    for k, (img, label) in enumerate(zip(images, labels)):
        d = root / str(label)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "RGB").save(d / f"{k:05}.png")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--subset", type=pathlib.Path, required=True)
    p.add_argument("--full", type=pathlib.Path, required=True)
    p.add_argument("--out", type=pathlib.Path, required=True)
    p.add_argument("--epochs", type=int, default=6)
    a = p.parse_args()
    torch.manual_seed(0)
    folder = a.out / "folder"
    subset = {}
    for split, stem in [("train", "train"), ("test", "t10k")]:
        x = colour(idx(a.subset, f"{stem}-images-idx3-ubyte.gz"), 1 if split == "train" else 3)
        y = idx(a.subset, f"{stem}-labels-idx1-ubyte.gz")
        write_folder(folder / split, x, y)
        subset[split] = (x, y)
    x = tensor(colour(idx(a.full, "train-images-idx3-ubyte.gz"), 2))
    y = torch.from_numpy(idx(a.full, "train-labels-idx1-ubyte.gz").astype(np.int64))
    model = Cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(a.epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            b = order[i : i + 128]
            opt.zero_grad()
            F.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
        print(f"epoch {epoch + 1}/{a.epochs} done", flush=True)
    model.eval()
    xt, yt = tensor(subset["test"][0]), torch.from_numpy(subset["test"][1].astype(np.int64))
    with torch.no_grad():
        errors = int((model(xt).argmax(1) != yt).sum())
    out = a.out / "teacher.onnx"
    torch.onnx.export(
        model,
        (xt[:1],),
        str(out),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
        opset_version=13,
        dynamo=False,
    )
    print(f"{out}: {errors} errors of {len(yt)} on the folder's test images (PyTorch's forward)")


if __name__ == "__main__":
    main()
