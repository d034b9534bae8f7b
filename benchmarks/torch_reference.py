"""The 1989 recipe as a per-step PyTorch loop: the way the public reproductions train.

Written from the specification in docs/spec.md (not copied from any
port): the same network, initialisation rule, MSE on +-1 targets, SGD lr 0.03,
one digit per step in a fixed order. Used by ``benchmarks/speed.py`` as the
speed reference; needs ``pip install torch`` (CPU build is enough).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F


class Net1989(torch.nn.Module):
    def __init__(self):
        super().__init__()
        u = lambda fan_in, *shape: torch.nn.Parameter((torch.rand(*shape) * 2 - 1) * 2.4 / fan_in**0.5)
        self.h1_w, self.h1_b = u(25, 12, 1, 5, 5), torch.nn.Parameter(torch.zeros(12, 8, 8))
        self.h2_w, self.h2_b = u(200, 12, 8, 5, 5), torch.nn.Parameter(torch.zeros(12, 4, 4))
        self.h3_w, self.h3_b = u(192, 192, 30), torch.nn.Parameter(torch.zeros(30))
        self.out_w, self.out_b = u(30, 30, 10), torch.nn.Parameter(-torch.ones(10))
        self.groups = [list(range(0, 8)), list(range(4, 12)), [0, 1, 2, 3, 8, 9, 10, 11]]

    def forward(self, x):  # (B, 1, 16, 16)
        x = torch.tanh(F.conv2d(F.pad(x, (2, 2, 2, 2), value=-1.0), self.h1_w, stride=2) + self.h1_b)
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)
        x = torch.cat(
            [F.conv2d(x[:, g], self.h2_w[4 * i : 4 * i + 4], stride=2) for i, g in enumerate(self.groups)], dim=1
        )
        x = torch.tanh(x + self.h2_b).flatten(1)
        x = torch.tanh(x @ self.h3_w + self.h3_b)
        return torch.tanh(x @ self.out_w + self.out_b)


def run(train_images, train_labels, test_images, test_labels, passes: int, seed: int = 1337) -> dict:
    """Trains ``passes`` passes, evaluating after each; returns timings and final metrics."""
    torch.manual_seed(seed)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    xtr, xte = to_t(train_images), to_t(test_images)
    ytr = torch.from_numpy(np.where(np.arange(10) == train_labels[:, None], 1.0, -1.0).astype(np.float32))
    model = Net1989()
    opt = torch.optim.SGD(model.parameters(), lr=0.03)
    pass_s, metrics = [], {}
    for _ in range(passes):
        t = time.perf_counter()
        for i in range(len(xtr)):
            loss = torch.mean((model(xtr[i : i + 1]) - ytr[i : i + 1]) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        pass_s.append(time.perf_counter() - t)
        with torch.no_grad():
            for split, x, y in (("train", xtr, train_labels), ("test", xte, test_labels)):
                misses = int((model(x).argmax(1).numpy() != y).sum())
                metrics[split] = {"misses": misses, "error": 100.0 * misses / len(y)}
    return {"pass_s": pass_s, "us_per_step": 1e6 * float(np.median(pass_s)) / len(xtr), "final": metrics,
            "threads": torch.get_num_threads(), "torch": torch.__version__}
