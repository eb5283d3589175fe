"""Reference values for edgekd's ResNet and MobileNetV2 layers, from PyTorch.

Builds one ResNet basic block with a projection shortcut (8 -> 16 channels, stride 2) and one
MobileNetV2 inverted residual block (8 channels, expansion 6, 3x3 depthwise, stride 1, with
its residual), each with fixed weights, runs a batch through it in training mode (batch
statistics), back-propagates a fixed weighting of the output, and writes inputs, weights,
outputs, every gradient and the running statistics after the step to a JSON file that
distill/tests/pytorch_blocks.rs compares edgekd's layers with.

    python scripts/torch_reference_blocks.py --out distill/tests/fixtures/pytorch-blocks.json

Parameter names follow edgekd's checkpoints (`conv1.weight`, `conv1.bn.weight`, ...).
"""

import argparse
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def fixed(shape, salt):
    """Deterministic values in about [-1, 1] that do not depend on PyTorch's generator."""
    n = math.prod(shape)
    values = [math.sin(0.37 * i + salt) * math.cos(0.11 * i * salt + 1.0) for i in range(n)]
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


class ConvBn(nn.Module):
    def __init__(self, cin, cout, k, stride, groups=1, act="relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x):
        y = self.bn(self.conv(x))
        if self.act == "relu":
            return F.relu(y)
        if self.act == "relu6":
            return F.relu6(y)
        return y


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = ConvBn(cin, cout, 3, stride)
        self.conv2 = ConvBn(cout, cout, 3, 1, act=None)
        self.shortcut = ConvBn(cin, cout, 1, stride, act=None)

    def forward(self, x):
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class InvertedResidual(nn.Module):
    def __init__(self, c, t):
        super().__init__()
        self.expand = ConvBn(c, c * t, 1, 1, act="relu6")
        self.depthwise = ConvBn(c * t, c * t, 3, 1, groups=c * t, act="relu6")
        self.project = ConvBn(c * t, c, 1, 1, act=None)

    def forward(self, x):
        return x + self.project(self.depthwise(self.expand(x)))


def named_convbns(block):
    for name, m in block.named_children():
        yield name, m


def run(block, x):
    """Fills weights, runs forward and backward, returns everything as plain lists."""
    params = {}
    for salt, (name, m) in enumerate(named_convbns(block), start=1):
        with torch.no_grad():
            m.conv.weight.copy_(fixed(m.conv.weight.shape, salt) * 0.4)
            m.bn.weight.copy_(1.0 + 0.2 * fixed(m.bn.weight.shape, salt + 10))
            m.bn.bias.copy_(0.1 * fixed(m.bn.bias.shape, salt + 20))
        params[f"{name}.weight"] = m.conv.weight
        params[f"{name}.bn.weight"] = m.bn.weight
        params[f"{name}.bn.bias"] = m.bn.bias
    block.train()
    x = x.clone().requires_grad_(True)
    y = block(x)
    mix = fixed(y.shape, 99)
    (y * mix).sum().backward()
    out = {
        "input": x.detach().flatten().tolist(),
        "input_shape": list(x.shape),
        "output": y.detach().flatten().tolist(),
        "output_shape": list(y.shape),
        "mix": mix.flatten().tolist(),
        "grad.input": x.grad.flatten().tolist(),
    }
    for name, p in params.items():
        out[name] = p.detach().flatten().tolist()
        out[f"{name}.shape"] = list(p.shape)
        out[f"grad.{name}"] = p.grad.flatten().tolist()
    for name, m in named_convbns(block):
        out[f"{name}.bn.running_mean"] = m.bn.running_mean.flatten().tolist()
        out[f"{name}.bn.running_var"] = m.bn.running_var.flatten().tolist()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="distill/tests/fixtures/pytorch-blocks.json")
    a = p.parse_args()
    torch.manual_seed(0)
    resnet = run(BasicBlock(8, 16, 2), fixed((4, 8, 9, 9), 5))
    mobilenet = run(InvertedResidual(8, 6), fixed((4, 8, 7, 7), 6))
    with open(a.out, "w") as f:
        json.dump(
            {"torch": torch.__version__, "resnet_block": resnet, "mobilenetv2_block": mobilenet},
            f,
        )
    print(f"wrote {a.out} (PyTorch {torch.__version__})")


if __name__ == "__main__":
    main()
