"""PyTorch reference for `lucir-driver bench`: the same training step, timed the same way.

The network mirrors lucir-nn's CIFAR ResNet (3x3 stem, three stages of basic blocks, 1x1 conv + BN
shortcut where the shape changes, no ReLU after the last block, global average pooling) with a
cosine classifier (learnable scale) and cross-entropy, trained by SGD (momentum 0.9, weight decay
5e-4, lr 0.1) on a fixed random batch. Prints one JSON line like the Rust bench.

    python benches/reference/pytorch_train_step.py --model resnet32 --threads 2
"""

import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, ci, co, stride, last):
        super().__init__()
        self.conv1 = nn.Conv2d(ci, co, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(co)
        self.conv2 = nn.Conv2d(co, co, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(co)
        self.shortcut = None
        if stride != 1 or ci != co:
            self.shortcut = nn.Sequential(
                nn.Conv2d(ci, co, 1, stride, bias=False), nn.BatchNorm2d(co)
            )
        self.last = last

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return out if self.last else F.relu(out)


class ResNet(nn.Module):
    def __init__(self, n, in_ch, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, ci = [], 16
        for stage, co in enumerate([16, 32, 64]):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                last = stage == 2 and i == n - 1
                blocks.append(Block(ci, co, stride, last))
                ci = co
        self.blocks = nn.Sequential(*blocks)
        self.weight = nn.Parameter(torch.randn(classes, 64) * 0.1)
        self.sigma = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        f = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.sigma * F.linear(F.normalize(f), F.normalize(self.weight))


def rss_now_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    rss_import_mb = rss_now_mb()
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet32", choices=["resnet20", "resnet32", "resnet56"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--input", default="1x28x28")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c, h, w = (int(v) for v in a.input.split("x"))
    n = {"resnet20": 3, "resnet32": 5, "resnet56": 9}[a.model]
    net = ResNet(n, c, 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(a.batch, c, h, w) * 2 - 1
    y = torch.arange(a.batch) % 10

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    secs = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "model": a.model, "batch": a.batch, "input": a.input, "threads": a.threads,
        "framework": f"pytorch {torch.__version__}",
        "images_per_s": round(a.batch * a.steps / secs, 1), "peak_rss_mb": round(rss_mb, 1),
        "rss_after_import_mb": round(rss_import_mb, 1),
    }))


if __name__ == "__main__":
    main()
