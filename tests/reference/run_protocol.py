#!/usr/bin/env python3
"""The fmnist-quick protocol (docs/design.md §4) end to end with the PyTorch LUCIR of
lucir_torch.py: 5 base classes + 5 phases of one class, 12 epochs per phase, herding 20
exemplars per class, CNN and NME evaluation. A second implementation of the whole protocol, to
compare accuracy over seeds with lucir-rs on the same machine.

    python3 tests/reference/run_protocol.py --seed 1993 [--method finetune] [--threads 2]

Prints one JSON line: per-phase CNN / NME accuracy and the average incremental accuracy.
"""

import argparse
import copy
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lucir_torch import (FMNIST_ORDER, CosineLinear, ResNet, SplitCosineLinear, fmnist,
                         lucir_loss, lucir_optimizer, normalise)


M64 = (1 << 64) - 1


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def hash_order(seed, epoch, n):
    """The shuffle lucir-data used before its ChaCha8 stream: Fisher-Yates driven by SplitMix64."""
    idx = list(range(n))
    state = splitmix64(seed ^ splitmix64(epoch))
    for i in range(n - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & M64
        j = splitmix64(state) % (i + 1)
        idx[i], idx[j] = idx[j], idx[i]
    return idx


def hash_augment(u8, ids, seed, epoch):
    """The crops lucir-data drew before its ChaCha8 stream: a hash of (seed, epoch, sample id)."""
    padded = F.pad(u8, (4, 4, 4, 4))
    out = torch.empty_like(u8)
    base = splitmix64(splitmix64(seed) ^ epoch)
    for i, sid in enumerate(ids):
        r = splitmix64(base ^ int(sid))
        dy, dx, flip = r % 9, (r >> 20) % 9, (r >> 63) == 1
        img = padded[i, :, dy:dy + 28, dx:dx + 28]
        out[i] = img.flip(-1) if flip else img
    return out


def augment(u8, gen):
    """Random 28×28 crop of the image zero-padded by 4, and a horizontal flip with p = ½."""
    n = u8.shape[0]
    padded = F.pad(u8, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=gen)
    dx = torch.randint(0, 9, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(u8)
    for i in range(n):
        img = padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28]
        out[i] = img.flip(-1) if flip[i] else img
    return out


@torch.no_grad()
def features(backbone, u8, flip=False):
    backbone.eval()
    x = torch.from_numpy(np.ascontiguousarray(u8))
    if flip:
        x = x.flip(-1)
    out = [backbone.features(normalise(x[i:i + 500].numpy(), torch.float32))
           for i in range(0, len(x), 500)]
    return torch.cat(out)


def herding(d, m):
    mu = d.mean(0)
    w = mu.clone()
    picked = []
    for _ in range(min(m, len(d))):
        s = d @ w
        if picked:
            s[picked] = -float("inf")
        i = int(s.argmax())
        picked.append(i)
        w = w + mu - d[i]
    return picked


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=1993)
    p.add_argument("--method", default="lucir", choices=["lucir", "finetune"])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--draws", default="torch",
                   choices=["torch", "hash", "numpy", "hash-order", "hash-crop"],
                   help="shuffle and augmentation from PyTorch's generator, or from the hash "
                        "of (seed, phase, epoch, sample) lucir-data drew from before its ChaCha8 "
                        "stream, or from a numpy generator reseeded per (seed, phase, epoch); "
                        "hash-order / hash-crop: the hash's shuffle / crops and flips, the rest "
                        "from the numpy generator")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    tr_x, tr_y = fmnist("train")
    te_x, te_y = fmnist("t10k")
    pos = {c: i for i, c in enumerate(FMNIST_ORDER)}
    train_ids = [np.flatnonzero(tr_y == c)[:1000] for c in FMNIST_ORDER]
    # lucir-rs numbers samples by their place in the 1000-per-class subset (file order).
    subset_id = {int(i): k for k, i in enumerate(sorted(np.concatenate(train_ids)))}
    test_ids = [np.flatnonzero(te_y == c) for c in FMNIST_ORDER]
    lucir = a.method == "lucir"
    head = CosineLinear(64, 5) if lucir else nn.Linear(64, 5)
    net = ResNet(3, 1, head)
    memory = {}
    results = []
    t0 = time.time()
    for phase in range(6):
        new = [0, 1, 2, 3, 4] if phase == 0 else [4 + phase]
        old = 0 if phase == 0 else 4 + phase
        prev = None
        if phase > 0:
            prev = copy.deepcopy(net).eval()
            if lucir:
                fc = SplitCosineLinear(64, old, len(new))
                with torch.no_grad():
                    fc.fc1.weight.copy_(net.fc.weight)
                    fc.sigma.copy_(net.fc.sigma)
                    f = F.normalize(features(prev, tr_x[train_ids[new[0]]]), dim=1)
                    a_norm = net.fc.weight.norm(dim=1).mean()
                    fc.fc2.weight.copy_(F.normalize(f.mean(0, keepdim=True), dim=1) * a_norm)
            else:
                fc = nn.Linear(64, old + len(new))
                with torch.no_grad():
                    fc.weight[:old].copy_(net.fc.weight)
                    fc.bias[:old].copy_(net.fc.bias)
            net.fc = fc
        ids = np.concatenate([np.sort(train_ids[c]) for c in new]
                             + [memory[c] for c in range(old)])
        labels = np.concatenate([[c] * len(train_ids[c]) for c in new]
                                + [[c] * len(memory[c]) for c in range(old)]).astype(np.int64)
        opt = lucir_optimizer(net, 0.1) if lucir else torch.optim.SGD(
            net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, [m for m in (a.epochs // 2, a.epochs * 3 // 4) if m > 0], 0.1)
        lam = 5.0 * np.sqrt(old / len(new)) if phase > 0 else 0.0
        u8 = torch.from_numpy(tr_x[ids])
        y_all = torch.from_numpy(labels)
        loader_seed = (a.seed ^ (phase * 0x9E3779B9)) & M64
        for epoch in range(a.epochs):
            net.train()
            if a.draws in ("numpy", "hash-order", "hash-crop"):
                rng = np.random.default_rng([a.seed, phase, epoch])
                perm = torch.from_numpy(rng.permutation(len(ids)))
                gen_np = torch.Generator().manual_seed(int(rng.integers(2**62)))
            if a.draws in ("hash", "hash-order"):
                perm = torch.tensor(hash_order(loader_seed, epoch, len(ids)))
            elif a.draws == "torch":
                perm = torch.randperm(len(ids), generator=gen)
            for b in range(0, len(ids), 128):
                sel = perm[b:b + 128]
                if a.draws in ("hash", "hash-crop"):
                    sids = [subset_id[int(ids[i])] for i in sel]
                    x = hash_augment(u8[sel], sids, loader_seed, epoch)
                elif a.draws in ("numpy", "hash-order"):
                    x = augment(u8[sel], gen_np)
                else:
                    x = augment(u8[sel], gen)
                x = normalise(x.numpy(), torch.float32)
                y = y_all[sel]
                opt.zero_grad()
                if lucir and phase > 0:
                    loss, _ = lucir_loss(net, prev, x, y, old, lam)
                else:
                    loss = F.cross_entropy(net(x), y)
                loss.backward()
                opt.step()
            sched.step()
        if lucir and phase > 0:
            fc = CosineLinear(64, old + len(new))
            with torch.no_grad():
                fc.weight.copy_(torch.cat([net.fc.fc1.weight, net.fc.fc2.weight]))
                fc.sigma.copy_(net.fc.sigma)
            net.fc = fc
        for c in new:
            d = F.normalize(features(net, tr_x[train_ids[c]]), dim=1)
            memory[c] = train_ids[c][herding(d, 20)]
        seen = old + len(new)
        means = []
        for c in range(seen):
            m = (F.normalize(features(net, tr_x[memory[c]]), dim=1).mean(0)
                 + F.normalize(features(net, tr_x[memory[c]], flip=True), dim=1).mean(0)) / 2
            means.append(F.normalize(m, dim=0))
        means = torch.stack(means)
        tid = np.concatenate([test_ids[c] for c in range(seen)])
        ty = torch.tensor([pos[int(c)] for c in te_y[tid]])
        f = features(net, te_x[tid])
        with torch.no_grad():
            cnn = net.fc(f).argmax(1)
        nme = (F.normalize(f, dim=1) @ means.T).argmax(1)
        is_new = ty >= old
        results.append({"phase": phase, "cnn": 100 * (cnn == ty).double().mean().item(),
                        "nme": 100 * (nme == ty).double().mean().item(),
                        "old_cnn": 100 * (cnn == ty)[~is_new].double().mean().item()
                        if old else None,
                        "new_cnn": 100 * (cnn == ty)[is_new].double().mean().item()})
    print(json.dumps({
        "method": a.method, "seed": a.seed, "draws": a.draws, "framework": f"pytorch {torch.__version__}",
        "phases": results,
        "avg_inc_acc_cnn": float(np.mean([r["cnn"] for r in results])),
        "avg_inc_acc_nme": float(np.mean([r["nme"] for r in results])),
        "wall_seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
