"""PyTorch reference for `lucir-driver bench`: the same training step, timed the same way.

The network is tests/reference/lucir_torch.py's CIFAR ResNet (3x3 stem, three stages of basic
blocks, 1x1 conv + BN shortcut where the shape changes, no ReLU after the last block, global
average pooling) with a cosine classifier (learnable scale) and cross-entropy, trained by SGD (momentum 0.9, weight decay
5e-4, lr 0.1) on a fixed random batch. Prints one JSON line like the Rust bench.

    python benches/reference/pytorch_train_step.py --model resnet32 --threads 2
    python benches/reference/pytorch_train_step.py --model resnet32 --input 3x32x32 --device cuda
    python benches/reference/pytorch_train_step.py --device cuda --compile   # CUDA graphs

On CUDA the timing synchronises before and after the timed steps (not inside), reports the
peak GPU memory, and `--compile` wraps the step in torch.compile(mode="reduce-overhead"),
which captures it in CUDA graphs. Convolutions and products run in true f32, as lucir-rs's
do (cuDNN's FMA math): PyTorch's default would let cuDNN use TF32 on Ampere and later;
`--tf32` allows it, for a comparison with PyTorch as it ships.

`--precision bf16` runs the forward pass under CPU autocast to bfloat16, PyTorch's own mixed
precision and the comparison for `lucir-driver bench --precision bf16`: every convolution and
linear layer in bf16 (lucir-rs keeps the stems, the stride-2 layers and the classifier in
f32), activations in bf16 between them, losses, weights and the optimiser in f32.
"""

import argparse
import json
import pathlib
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "reference"))
from lucir_torch import CosineLinear, ResNet  # noqa: E402  (the parity tests' PyTorch LUCIR)


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
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--compile", action="store_true",
                   help='torch.compile(mode="reduce-overhead") around the step (CUDA graphs)')
    p.add_argument("--tf32", action="store_true",
                   help="let cuDNN and cuBLAS use TF32 (PyTorch's default for convolutions)")
    p.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                   help="bf16: the forward pass under torch.autocast (CPU, bfloat16)")
    a = p.parse_args()
    if a.precision == "bf16" and a.device != "cpu":
        p.error("--precision bf16 is CPU autocast; the cuda comparison is f32 (or --tf32)")
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    c, h, w = (int(v) for v in a.input.split("x"))
    n = {"resnet20": 3, "resnet32": 5, "resnet56": 9}[a.model]
    net = ResNet(n, c, CosineLinear(64, 10)).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = (torch.rand(a.batch, c, h, w) * 2 - 1).to(dev)
    y = (torch.arange(a.batch) % 10).to(dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    if a.compile:
        step = torch.compile(step, mode="reduce-overhead")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    # Compilation and graph capture happen in the warm-up.
    for _ in range(10 if a.compile else 3):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    secs = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "model": a.model, "batch": a.batch, "input": a.input, "threads": a.threads,
        "device": a.device, "compile": a.compile, "tf32": a.tf32, "precision": a.precision,
        "framework": f"pytorch {torch.__version__}",
        "images_per_s": round(a.batch * a.steps / secs, 1), "peak_rss_mb": round(rss_mb, 1),
        "rss_after_import_mb": round(rss_import_mb, 1),
    }
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
