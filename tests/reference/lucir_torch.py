"""An independent PyTorch LUCIR: the modules and losses of the authors' CIFAR code
(github.com/hshustc/CVPR19_Incremental_Learning: modified_resnet_cifar.py, modified_linear.py,
class_incremental_cosine_cifar100.py), with their tensor names, so that a lucir-rs model exported
as safetensors loads with `load_state_dict`. Used by make_golden.py and check_export.py; needs
PyTorch, numpy and safetensors, nothing of lucir-rs.
"""

import gzip
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
# fmnist-quick: class order of numpy seed 1993, normalisation of docs/design.md §4.
FMNIST_ORDER = [4, 2, 7, 6, 0, 3, 5, 8, 9, 1]
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


def read_idx(path):
    """Images (N×1×H×W uint8) or labels (N uint8) of an IDX file, gzipped or not."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims[0], 1, *dims[1:]) if ndim == 3 else data.reshape(dims)


def fmnist(split):
    """(images N×1×28×28 uint8, labels N) of the Fashion-MNIST `train` or `t10k` split."""
    d = os.environ.get("FMNIST_DIR", FMNIST_DIR)
    return (read_idx(f"{d}/{split}-images-idx3-ubyte.gz"),
            read_idx(f"{d}/{split}-labels-idx1-ubyte.gz"))


def normalise(images_u8, dtype=torch.float64):
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(dtype) / 255.0
    return (x - FMNIST_MEAN) / FMNIST_STD


class BasicBlock(nn.Module):
    def __init__(self, ci, co, stride, last):
        super().__init__()
        self.conv1 = nn.Conv2d(ci, co, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(co)
        self.conv2 = nn.Conv2d(co, co, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(co)
        self.downsample = None
        if stride != 1 or ci != co:
            self.downsample = nn.Sequential(
                nn.Conv2d(ci, co, 1, stride, bias=False), nn.BatchNorm2d(co))
        self.last = last

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.last else F.relu(out)


class CosineLinear(nn.Module):
    def __init__(self, d, c, sigma=True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c, d).uniform_(-1 / math.sqrt(d), 1 / math.sqrt(d)))
        self.sigma = nn.Parameter(torch.ones(1)) if sigma else None

    def forward(self, f):
        cos = F.linear(F.normalize(f, dim=1), F.normalize(self.weight, dim=1))
        return cos if self.sigma is None else self.sigma * cos


class SplitCosineLinear(nn.Module):
    def __init__(self, d, c_old, c_new):
        super().__init__()
        self.fc1 = CosineLinear(d, c_old, sigma=False)
        self.fc2 = CosineLinear(d, c_new, sigma=False)
        self.sigma = nn.Parameter(torch.ones(1))

    def forward(self, f):
        return self.sigma * torch.cat([self.fc1(f), self.fc2(f)], dim=1)


class ResNet(nn.Module):
    """CIFAR ResNet-(6n+2) feature extractor with a head `fc`; `features` stops before it."""

    def __init__(self, n=3, in_ch=1, fc=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        ci = 16
        for stage, co in enumerate([16, 32, 64]):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(ci, co, stride, last=stage == 2 and i == n - 1))
                ci = co
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = fc
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))


def margin_rank(cos, labels, n_old, k, margin):
    """Inter-class separation as the authors compute it (loss3 of their training loop), with K
    clamped to the number of new classes (their `topk` would fail beyond it)."""
    k = min(k, cos.shape[1] - n_old)
    gt = cos.gather(1, labels.view(-1, 1))
    hard = labels < n_old
    if hard.sum() == 0:
        return cos.sum() * 0
    top = cos[:, n_old:].topk(k, dim=1)[0][hard]
    gt = gt[hard].repeat(1, k)
    ones = torch.ones(top.numel(), 1, dtype=cos.dtype)
    return nn.MarginRankingLoss(margin=margin)(gt.reshape(-1, 1), top.reshape(-1, 1), ones)


def feature_distill(f, f_star, lam):
    ones = torch.ones(f.shape[0], dtype=f.dtype)
    return nn.CosineEmbeddingLoss()(f, f_star.detach(), ones) * lam


def lucir_optimizer(net, lr, momentum=0.9, wd=5e-4):
    """The authors' groups: everything at (lr, wd) except the old-class block fc.fc1 (frozen)."""
    if isinstance(net.fc, SplitCosineLinear):
        frozen = {id(p) for p in net.fc.fc1.parameters()}
        base = [p for p in net.parameters() if id(p) not in frozen]
        groups = [{"params": base, "lr": lr, "weight_decay": wd},
                  {"params": list(net.fc.fc1.parameters()), "lr": 0.0, "weight_decay": 0.0}]
    else:
        groups = [{"params": list(net.parameters()), "lr": lr, "weight_decay": wd}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=wd)


def lucir_loss(net, prev, x, y, n_old, lam, k=2, margin=0.5):
    """(total, terms) of one LUCIR step: CE on σ·cos, less-forget with λ, margin ranking."""
    f = net.features(x)
    head = net.fc
    cos = torch.cat([head.fc1(f), head.fc2(f)], dim=1)
    logits = head.sigma * cos
    ce = F.cross_entropy(logits, y)
    terms = {"ce": ce, "f": f, "cos": cos, "logits": logits}
    total = ce
    if prev is not None:
        with torch.no_grad():
            f_star = prev.features(x)
        terms["f_star"] = f_star
        terms["lf"] = feature_distill(f, f_star, lam)
        terms["mr"] = margin_rank(cos, y, n_old, k, margin)
        total = total + terms["lf"] + terms["mr"]
    terms["total"] = total
    return total, terms
