"""PyTorch reference for the GPU rows of `benches/heads.rs`: one LUCIR head step (cosine logits,
scale σ, cross-entropy, margin ranking with K = 2 hard negatives over the upper half of the
classes, feature distillation with λ = 5; forward and backward) at the same shapes.

Two ways, each the mean of 50 steps after 5 warm-up steps, synchronised:
- `host`: as a CPU network calls the heads — F, Θ and F* start in host memory each step, the
  gradients of F and Θ and ∂σ end there (what `GpuHeads` does on a tape);
- `resident`: everything already on the GPU and left there (the kernels alone, plus PyTorch's
  launch overhead).

    python benches/reference/pytorch_heads.py
"""

import time

import torch
import torch.nn.functional as F

SHAPES = [(128, 100, 64), (128, 1000, 512), (128, 10000, 512)]


def random(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) - 0.5


def step(f, theta, f_star, sigma, labels, n_old, k=2, margin=0.5, lam=5.0):
    cos = F.normalize(f, dim=1) @ F.normalize(theta, dim=1).t()
    ce = F.cross_entropy(sigma * cos, labels)
    hard = labels < n_old
    gt = cos.gather(1, labels.view(-1, 1))[hard].repeat(1, k).reshape(-1)
    top = cos[:, n_old:].topk(min(k, cos.shape[1] - n_old), dim=1)[0][hard].reshape(-1)
    mr = F.margin_ranking_loss(gt, top, torch.ones_like(gt), margin=margin)
    lf = lam * (1 - F.cosine_similarity(f, f_star, dim=1)).mean()
    return ce + mr + lf


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(run, iters=50):
    for _ in range(5):
        run()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        run()
    sync()
    return (time.perf_counter() - t0) / iters


def main():
    # Without a GPU it runs on the CPU (a check of the script, not a reference figure).
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    print(f"TORCHHEAD|device|{name}|pytorch {torch.__version__}")
    for b, c, d in SHAPES:
        f, theta, f_star = random((b, d), 1), random((c, d), 2), random((b, d), 3)
        labels = torch.arange(b) * 7 % c
        n_old = c // 2

        def host():
            fg = f.to(dev).requires_grad_()
            tg = theta.to(dev).requires_grad_()
            sg = torch.full((1,), 4.0, device=dev, requires_grad=True)
            loss = step(fg, tg, f_star.to(dev), sg, labels.to(dev), n_old)
            loss.backward()
            return fg.grad.cpu(), tg.grad.cpu(), sg.grad.item()

        fr, tr, fsr = f.to(dev), theta.to(dev), f_star.to(dev)
        lr_ = labels.to(dev)

        def resident():
            fg = fr.detach().requires_grad_()
            tg = tr.detach().requires_grad_()
            sg = torch.full((1,), 4.0, device=dev, requires_grad=True)
            step(fg, tg, fsr, sg, lr_, n_old).backward()

        th, tres = timed(host), timed(resident)
        print(
            f"TORCHHEAD|B={b} C={c} D={d}|host {th * 1e6:.1f} µs|resident {tres * 1e6:.1f} µs|"
        )


if __name__ == "__main__":
    main()
