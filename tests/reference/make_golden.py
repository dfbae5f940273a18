#!/usr/bin/env python3
"""Writes the golden fixtures of tests/pytorch_parity/main.rs (tests/fixtures/*.safetensors).

Run by hand, from the repository root, with PyTorch (CPU is enough), numpy, safetensors and the
Fashion-MNIST files in /usr/share/datasets/fashion-mnist (or $FMNIST_DIR):

    python3 tests/reference/make_golden.py            # about a minute on 2 cores

CI never runs it; the fixtures it writes are committed. What they hold (docs/design.md §9):

- resnet20_prev.safetensors: a ResNet-20 (1×28×28) with a 5-class cosine head and σ ≠ 1, briefly
  trained on the fmnist-quick base classes; every value is a float16 number, so the f16 file
  loads exactly into f32 and f64 models. resnet20_cur.safetensors: the same network trained a
  few steps further with a split head (5 old + 3 new classes): the current model of a phase.
- lucir_step.safetensors: a batch of 24 images (old-class exemplars and new-class samples), and
  in float64 the features of both models, cosines, logits, cross-entropy, less-forget loss
  (adaptive λ), margin ranking (K = 2 and K = 5 > |new|), their sum, the gradient of every
  parameter (all elements of tensors up to 1024, 256 fixed elements of larger ones: `idx.NAME`), the
  batch-norm running statistics after the step, and the parameters after one and two SGD steps
  with LUCIR's groups.
- ops.safetensors: imprinting, herding, NME class means and predictions, CNN predictions, and
  the fine-tuning (linear head, CE) and iCaRL-style (KD, T = 2) losses with their gradients.
- sequence_base / sequence_inc.safetensors: 30 training steps from the same weights on the same
  batches (Fashion-MNIST training-set indices, no augmentation), with the learning-rate schedule
  of 6 epochs of 5 steps (×0.1 at epochs 3 and 4), and the loss terms of every step.
"""

import pathlib

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lucir_torch import (FMNIST_ORDER, CosineLinear, ResNet, SplitCosineLinear, fmnist,
                         lucir_loss, lucir_optimizer, margin_rank, normalise)

OUT = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
BASE, NEW_STEP, NEW_SEQ = 5, 3, 1
LAMBDA_BASE, K, MARGIN, LR, MOMENTUM, WD = 5.0, 2, 0.5, 0.1, 0.9, 5e-4
SAMPLE = 256


def torch_meta(**kw):
    return {k: str(v) for k, v in kw.items()}


def f16_exact(net):
    """Rounds every parameter and buffer to a float16 value (stored exactly in f16, f32, f64)."""
    with torch.no_grad():
        for t in list(net.parameters()) + [b for b in net.buffers() if b.is_floating_point()]:
            t.copy_(t.half().to(t.dtype))


def f16_state(net):
    return {k: v.detach().half().contiguous() for k, v in net.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def sample_idx(name, numel):
    if numel <= 1024:
        return np.arange(numel)
    rng = np.random.default_rng(sum(map(ord, name)))
    return np.sort(rng.choice(numel, SAMPLE, replace=False))


def sampled(prefix, net, values):
    """`prefix.NAME` at the fixed indices `idx.NAME` for each named tensor in `values`."""
    out = {}
    for name, v in values.items():
        flat = v.detach().reshape(-1)
        idx = sample_idx(name, flat.numel())
        out[f"idx.{name}"] = torch.from_numpy(idx.astype(np.int64))
        out[f"{prefix}.{name}"] = flat[torch.from_numpy(idx)].double().contiguous()
    return out


def pool_ids(labels, classes, per_class):
    """The first `per_class` training images of each class (fmnist-quick's subset)."""
    ids = {}
    for pos, c in enumerate(classes):
        ids[pos] = np.flatnonzero(labels == c)[:per_class]
    return ids


def train_steps(net, prev, images, pool, steps, n_old, lam, rng, lr=LR):
    opt = lucir_optimizer(net, lr, MOMENTUM, WD)
    ids = np.concatenate([pool[p] for p in sorted(pool)])
    pos = np.concatenate([[p] * len(pool[p]) for p in sorted(pool)])
    for _ in range(steps):
        pick = rng.choice(len(ids), 128, replace=False)
        x = normalise(images[ids[pick]], torch.float32)
        y = torch.from_numpy(pos[pick].astype(np.int64))
        net.train()
        opt.zero_grad()
        if prev is None:
            loss = F.cross_entropy(net(x), y)
        else:
            loss, _ = lucir_loss(net, prev, x, y, n_old, lam, K, MARGIN)
        loss.backward()
        opt.step()


def make_models(images, labels):
    torch.manual_seed(1993)
    rng = np.random.default_rng(1993)
    prev = ResNet(3, 1, CosineLinear(64, BASE))
    base = pool_ids(labels, FMNIST_ORDER[:BASE], 1000)
    train_steps(prev, None, images, base, 60, 0, 0.0, rng)
    with torch.no_grad():
        prev.fc.sigma.fill_(prev.fc.sigma.item() + 2.0)  # σ well away from 1
    f16_exact(prev)
    prev.eval()
    cur = ResNet(3, 1, SplitCosineLinear(64, BASE, NEW_STEP))
    sd = {k: v for k, v in prev.state_dict().items() if not k.startswith("fc.")}
    cur.load_state_dict(sd, strict=False)
    with torch.no_grad():
        cur.fc.fc1.weight.copy_(prev.fc.weight)
        cur.fc.sigma.copy_(prev.fc.sigma)
    pool = pool_ids(labels, FMNIST_ORDER[:BASE + NEW_STEP], 1000)
    for p in range(BASE):
        pool[p] = pool[p][:20]
    lam = LAMBDA_BASE * np.sqrt(BASE / NEW_STEP)
    train_steps(cur, prev, images, pool, 8, BASE, lam, rng)
    f16_exact(cur)
    save_file(f16_state(prev), OUT / "resnet20_prev.safetensors",
              torch_meta(arch="resnet20", classes=BASE, class_order=FMNIST_ORDER))
    save_file(f16_state(cur), OUT / "resnet20_cur.safetensors",
              torch_meta(arch="resnet20", old=BASE, new=NEW_STEP))
    return prev.double(), cur.double()


def lucir_step(prev, cur, images, labels):
    """One LUCIR step in f64, then a second on the same batch."""
    rng = np.random.default_rng(7)
    ids, pos = [], []
    counts = [2] * BASE + [5, 5, 4]  # 10 old-class exemplars, 14 new-class samples
    for p, (c, n) in enumerate(zip(FMNIST_ORDER, counts)):
        pick = rng.choice(np.flatnonzero(labels == c)[:1000], n, replace=False)
        ids += list(pick)
        pos += [p] * n
    ids, pos = np.array(ids), np.array(pos)
    x = normalise(images[ids])
    y = torch.from_numpy(pos.astype(np.int64))
    lam = LAMBDA_BASE * np.sqrt(BASE / NEW_STEP)
    net = cur
    net.train()
    prev.eval()
    opt = lucir_optimizer(net, LR, MOMENTUM, WD)
    params = dict(net.named_parameters())
    before = {k: v.detach().clone() for k, v in params.items()}
    out = {"images": torch.from_numpy(images[ids].copy()), "labels": y,
           "ids": torch.from_numpy(ids.astype(np.int64))}
    for step in (1, 2):
        opt.zero_grad()
        total, t = lucir_loss(net, prev, x, y, BASE, lam, K, MARGIN)
        total.backward()
        if step == 1:
            with torch.no_grad():
                mr5 = margin_rank(t["cos"], y, BASE, 5, MARGIN)
            out.update({
                "features": t["f"], "features_prev": t["f_star"], "cos": t["cos"],
                "logits": t["logits"], "loss_ce": t["ce"], "loss_lf": t["lf"],
                "loss_mr": t["mr"], "loss_mr_k5": mr5, "loss_total": total,
            })
            out.update(sampled("grad", net, {k: p.grad for k, p in params.items()}))
            out.update({f"bn_after.{k}": v.clone() for k, v in net.state_dict().items()
                        if "running" in k})
        else:
            out.update({"step2_loss_total": total, "step2_loss_ce": t["ce"],
                        "step2_loss_lf": t["lf"], "step2_loss_mr": t["mr"]})
        opt.step()
        out.update(sampled(f"update{step}", net,
                           {k: p.detach() - before[k] for k, p in params.items()}))
    out = {k: (v.detach().double() if v.is_floating_point() else v).contiguous()
           for k, v in out.items()}
    meta = torch_meta(old=BASE, new=NEW_STEP, lambda_=lam, k=K, margin=MARGIN, lr=LR,
                      momentum=MOMENTUM, weight_decay=WD)
    save_file(out, OUT / "lucir_step.safetensors", meta)
    return out


def herding_spec(d, m):
    """docs/design.md §3: argmax among the not yet picked, w ← w + μ − d_i*."""
    mu = d.mean(0)
    w = mu.copy()
    picked = []
    for _ in range(m):
        s = d @ w
        s[picked] = -np.inf
        i = int(np.argmax(s))
        picked.append(i)
        w = w + mu - d[i]
    return picked


def ops(step):
    rng = np.random.default_rng(11)
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    out = {}
    # Imprinting: θ_c = a·normalise(mean of f̄), a = mean ‖θ_old‖.
    feats = rng.normal(size=(3 * 10, 64)) + np.repeat(rng.normal(size=(3, 64)), 10, axis=0)
    old = rng.normal(size=(5, 64)) * 0.3
    a = np.linalg.norm(old, axis=1).mean()
    rows = np.stack([unit(unit(feats[10 * c:10 * c + 10]).mean(0, keepdims=True))[0] * a
                     for c in range(3)])
    out.update({"imprint.features": feats, "imprint.old": old, "imprint.rows": rows})
    # Herding of 20 out of 50 normalised features.
    hf = unit(rng.normal(size=(50, 64)) + 0.5)
    out.update({"herding.features": hf,
                "herding.picks": np.array(herding_spec(hf, 20), dtype=np.int64)})
    # NME: class means from exemplar features (plain and flipped), predictions on test features.
    plain = rng.normal(size=(5 * 6, 64)) + np.repeat(rng.normal(size=(5, 64)), 6, axis=0)
    flipped = plain + 0.3 * rng.normal(size=plain.shape)
    means = np.stack([unit(((unit(plain[6 * c:6 * c + 6]).mean(0)
                             + unit(flipped[6 * c:6 * c + 6]).mean(0)) / 2)[None])[0]
                      for c in range(5)])
    test = rng.normal(size=(40, 64)) + np.repeat(rng.normal(size=(5, 64)), 8, axis=0) * 0.7
    out.update({"nme.plain": plain, "nme.flipped": flipped, "nme.means": means,
                "nme.test": test, "nme.pred": np.argmax(unit(test) @ means.T, 1).astype(np.int64),
                "cnn.pred": step["logits"].argmax(1).numpy().astype(np.int64)})
    out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
    # Baselines on the step's features: fine-tuning (linear head, CE) and iCaRL-style KD.
    f = step["features"].clone().requires_grad_(True)
    y = step["labels"]
    g = torch.Generator().manual_seed(5)
    w = (torch.rand(8, 64, generator=g, dtype=torch.float64) - 0.5) / 4
    b = (torch.rand(8, generator=g, dtype=torch.float64) - 0.5) / 4
    w.requires_grad_(True)
    b.requires_grad_(True)
    z = F.linear(f, w, b)
    ce = F.cross_entropy(z, y)
    ce.backward()
    out.update({"linear.weight": w.detach(), "linear.bias": b.detach(), "finetune.loss": ce,
                "finetune.grad_weight": w.grad, "finetune.grad_bias": b.grad,
                "finetune.grad_features": f.grad})
    for t in (f, w, b):
        t.grad = None
    old_logits = torch.randn(24, BASE, generator=g, dtype=torch.float64) * 2
    z = F.linear(f, w, b)
    tau = 2.0
    kd = F.kl_div(F.log_softmax(z[:, :BASE] / tau, 1), F.softmax(old_logits / tau, 1),
                  reduction="batchmean") * tau * tau
    ce = F.cross_entropy(z, y)
    (ce + kd).backward()
    out.update({"icarl.old_logits": old_logits, "icarl.kd": kd, "icarl.loss": ce + kd,
                "icarl.grad_weight": w.grad, "icarl.grad_bias": b.grad,
                "icarl.grad_features": f.grad})
    out = {k: (v.detach().double() if v.is_floating_point() else v).contiguous()
           for k, v in out.items()}
    save_file(out, OUT / "ops.safetensors", torch_meta(kd_temperature=2.0, herding_m=20))


def sequence(name, prev, images, labels, incremental):
    """30 steps in f64 from resnet20_prev (base) or from it with a grown, imprinted head."""
    rng = np.random.default_rng(1994 if incremental else 1993)
    if incremental:
        net = ResNet(3, 1, SplitCosineLinear(64, BASE, NEW_SEQ)).double()
        sd = {k: v for k, v in prev.state_dict().items() if not k.startswith("fc.")}
        net.load_state_dict(sd, strict=False)
        pool = pool_ids(labels, FMNIST_ORDER[:BASE + NEW_SEQ], 1000)
        for p in range(BASE):
            pool[p] = pool[p][:20]
        with torch.no_grad():
            net.fc.fc1.weight.copy_(prev.fc.weight)
            net.fc.sigma.copy_(prev.fc.sigma)
            prev.eval()
            f = F.normalize(prev.features(normalise(images[pool[BASE]])), dim=1)
            a = prev.fc.weight.norm(dim=1).mean()
            row = F.normalize(f.mean(0, keepdim=True), dim=1) * a
            net.fc.fc2.weight.copy_(row.float().double())  # f32-exact start for both sides
        start_row = net.fc.fc2.weight.detach().clone()
        lam = LAMBDA_BASE * np.sqrt(BASE / NEW_SEQ)
    else:
        net = ResNet(3, 1, CosineLinear(64, BASE)).double()
        net.load_state_dict(prev.state_dict())
        pool = pool_ids(labels, FMNIST_ORDER[:BASE], 1000)
        lam = 0.0
    ids = np.concatenate([pool[p] for p in sorted(pool)])
    pos = np.concatenate([[p] * len(pool[p]) for p in sorted(pool)])
    opt = lucir_optimizer(net, LR, MOMENTUM, WD)
    steps, per_epoch, epochs = 30, 5, 6
    milestones = [epochs // 2, epochs * 3 // 4]
    batch_ids, batch_pos, lrs, terms = [], [], [], {k: [] for k in ("ce", "lf", "mr", "total")}
    prev.eval()
    for s in range(steps):
        if s % per_epoch == 0:
            perm = rng.permutation(len(ids))
        pick = perm[(s % per_epoch) * 128:(s % per_epoch + 1) * 128]
        lr = LR * 0.1 ** sum(m <= s // per_epoch for m in milestones)
        for gr in opt.param_groups:
            if gr["weight_decay"] > 0:  # the frozen old-class group keeps lr 0
                gr["lr"] = lr
        x = normalise(images[ids[pick]])
        y = torch.from_numpy(pos[pick].astype(np.int64))
        net.train()
        opt.zero_grad()
        if incremental:
            total, t = lucir_loss(net, prev, x, y, BASE, lam, K, MARGIN)
        else:
            total = F.cross_entropy(net(x), y)
            t = {"ce": total}
        total.backward()
        opt.step()
        batch_ids.append(ids[pick])
        batch_pos.append(pos[pick])
        lrs.append(lr)
        for k in terms:
            terms[k].append(float(t.get(k, torch.zeros(())).item()) if k != "total"
                            else float(total.item()))
    out = {"ids": torch.from_numpy(np.stack(batch_ids).astype(np.int64)),
           "labels": torch.from_numpy(np.stack(batch_pos).astype(np.int64)),
           "lr": torch.tensor(lrs, dtype=torch.float64)}
    out.update({f"loss_{k}": torch.tensor(v, dtype=torch.float64) for k, v in terms.items()})
    if incremental:
        out["fc.fc2.weight"] = start_row  # the imprinted new-class row both sides start from
    meta = torch_meta(incremental=incremental, old=BASE if incremental else 0,
                      new=NEW_SEQ if incremental else BASE, lambda_=lam, k=K, margin=MARGIN,
                      steps_per_epoch=per_epoch, epochs=epochs, lr=LR)
    return out, meta


def main():
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    images, labels = fmnist("train")
    prev, cur = make_models(images, labels)
    step = lucir_step(prev, cur, images, labels)
    ops(step)
    for name, inc in (("sequence_base", False), ("sequence_inc", True)):
        out, meta = sequence(name, prev, images, labels, inc)
        save_file(out, OUT / f"{name}.safetensors", meta)
    total = sum(p.stat().st_size for p in OUT.glob("*.safetensors"))
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
