"""One knowledge-distillation training step in PyTorch, timed phase by phase.

The reference scripts/compare-pytorch.sh holds edgekd against: the same models, batch,
loss (KL at temperature T scaled by T^2, blended with cross-entropy by alpha) and
optimizer (AdamW for the MNIST pairs; SGD with momentum 0.9 for the ResNet and MobileNetV2
pairs, as those networks are trained), on one thread unless told otherwise.

    python scripts/pytorch_kd_step.py --pair mlp --threads 1 --steps 100
    python scripts/pytorch_kd_step.py --pair resnet --image 3x32x32 --steps 10

Prints one line: `pytorch <pair> <threads> <ms per step> <ms per step, CPU>`.
"""

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(hidden):
    layers, width = [], 784
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(nn.Flatten(), *layers, nn.Linear(width, 10))


class LeNet(nn.Module):
    """edgekd's cnn:lenet5 / cnn:lenet5-half: conv5x5 (padding 2) - pool - conv5x5 - pool - fc - fc - fc."""

    def __init__(self, c1, c2, f1, f2):
        super().__init__()
        self.c1 = nn.Conv2d(1, c1, 5, padding=2)
        self.c2 = nn.Conv2d(c1, c2, 5)
        self.f1 = nn.Linear(c2 * 25, f1)
        self.f2 = nn.Linear(f1, f2)
        self.f3 = nn.Linear(f2, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2).flatten(1)
        return self.f3(F.relu(self.f2(F.relu(self.f1(x)))))


def make_divisible(v):
    """edgekd's zoo::make_divisible (the MobileNet reference code's _make_divisible, 8)."""
    r = max(8, int(v + 4) // 8 * 8)
    return r + 8 if r < 0.9 * v else r


class ConvBn(nn.Sequential):
    def __init__(self, cin, cout, k, stride, groups=1, act=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.main = nn.Sequential(ConvBn(cin, cout, 3, stride), ConvBn(cout, cout, 3, 1, act=None))
        self.shortcut = ConvBn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.main(x) + self.shortcut(x))


def resnet(depth, channels, classes=10, width=16):
    """edgekd's resnet:N: 3x3 stem, three stages of (N-2)/6 basic blocks, projections."""
    n = (depth - 2) // 6
    layers, cin = [ConvBn(channels, width, 3, 1)], width
    for stage in range(3):
        cout = width << stage
        for b in range(n):
            layers.append(BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1))
            cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


class InvertedResidual(nn.Module):
    def __init__(self, cin, hidden, cout, stride, expand):
        super().__init__()
        layers = [ConvBn(cin, hidden, 1, 1, act=nn.ReLU6)] if expand else []
        layers += [ConvBn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), ConvBn(hidden, cout, 1, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def mobilenetv2(width, channels, classes=10):
    """edgekd's mobilenetv2:W: stride 1 in the stem and the 24-channel stage."""
    stages = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    stem = make_divisible(32 * width)
    layers, cin = [ConvBn(channels, stem, 3, 1, act=nn.ReLU6)], stem
    for t, c, n, s in stages:
        cout = make_divisible(c * width)
        for b in range(n):
            layers.append(InvertedResidual(cin, cin * t, cout, s if b == 0 else 1, t != 1))
            cin = cout
    head = make_divisible(1280 * max(1.0, width))
    return nn.Sequential(*layers, ConvBn(cin, head, 1, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(head, classes))


PAIRS = {
    "mlp": (lambda: mlp([1200, 1200]), lambda: mlp([800, 800])),
    "cnn": (lambda: LeNet(6, 16, 120, 84), lambda: LeNet(3, 8, 60, 42)),
    # Plain training of the teacher MLP (no teacher): the measurement the issue started from.
    "train": (None, lambda: mlp([1200, 1200])),
    # Edge-class CNNs, each distilled from a teacher of its own architecture (the step's cost
    # with the teacher's forward pass; any teacher of the same size costs the same).
    "resnet": (lambda c: resnet(20, c), lambda c: resnet(20, c)),
    "mobilenetv2": (lambda c: mobilenetv2(0.5, c), lambda c: mobilenetv2(0.5, c)),
}

CNN_PAIRS = {"resnet", "mobilenetv2"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pair", choices=PAIRS, default="mlp")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--image", default="1x28x28", help="CxHxW of the CNN pairs' inputs")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    make_teacher, make_student = PAIRS[a.pair]
    c, h, w = (int(v) for v in a.image.split("x"))
    if a.pair in CNN_PAIRS:
        teacher, student = make_teacher(c).eval(), make_student(c)
        opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    else:
        teacher = make_teacher().eval() if make_teacher else None
        student = make_student()
        opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
        c, h, w = 1, 28, 28
    x = torch.randn(a.batch, c, h, w)
    y = torch.randint(0, 10, (a.batch,))
    t = a.temperature

    def step():
        logits = student(x)
        hard = F.cross_entropy(logits, y)
        if teacher is None:
            loss = hard
        else:
            with torch.no_grad():
                target = teacher(x)
            soft = F.kl_div(
                F.log_softmax(logits / t, dim=1),
                F.log_softmax(target / t, dim=1),
                reduction="batchmean",
                log_target=True,
            ) * (t * t)
            loss = a.alpha * soft + (1 - a.alpha) * hard
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(10):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        step()
    wall = (time.perf_counter() - wall) / a.steps * 1e3
    cpu = (time.process_time() - cpu) / a.steps * 1e3
    print(f"pytorch {a.pair} {a.threads} {wall:.2f} {cpu:.2f}")


if __name__ == "__main__":
    main()
