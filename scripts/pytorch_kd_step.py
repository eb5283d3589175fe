"""One knowledge-distillation training step in PyTorch, timed phase by phase.

The reference scripts/compare-pytorch.sh holds edgekd against: the same models, batch,
loss (KL at temperature T scaled by T^2, blended with cross-entropy by alpha) and
optimizer (AdamW, PyTorch's default implementation), on one thread unless told otherwise.

    python scripts/pytorch_kd_step.py --pair mlp --threads 1 --steps 100

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


PAIRS = {
    "mlp": (lambda: mlp([1200, 1200]), lambda: mlp([800, 800])),
    "cnn": (lambda: LeNet(6, 16, 120, 84), lambda: LeNet(3, 8, 60, 42)),
    # Plain training of the teacher MLP (no teacher): the measurement the issue started from.
    "train": (None, lambda: mlp([1200, 1200])),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pair", choices=PAIRS, default="mlp")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    make_teacher, make_student = PAIRS[a.pair]
    teacher = make_teacher().eval() if make_teacher else None
    student = make_student()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    x = torch.randn(a.batch, 1, 28, 28)
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
