#!/usr/bin/env python3
"""Loads the models a lucir-rs run exported (RUN/model-phase-P.safetensors) into the PyTorch
modules of lucir_torch.py and measures their CNN accuracy on the Fashion-MNIST test images of
the classes seen, beside the accuracy the run reported in RUN/results.json.

    python3 tests/reference/check_export.py runs/lucir-1993

Needs PyTorch, numpy, safetensors and the Fashion-MNIST files (a fmnist-quick run).
"""

import json
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lucir_torch import CosineLinear, ResNet, SplitCosineLinear, fmnist, normalise


def load_model(path):
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    sd = load_file(path)
    arch = meta["lucir.arch"]
    n = {"resnet20": 3, "resnet32": 5, "resnet56": 9}[arch]
    if "fc.fc1.weight" in sd:
        head = SplitCosineLinear(64, sd["fc.fc1.weight"].shape[0], sd["fc.fc2.weight"].shape[0])
    else:
        head = CosineLinear(64, sd["fc.weight"].shape[0])
    model = ResNet(n, sd["conv1.weight"].shape[1], head)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    return model.eval(), meta


def main():
    run = sys.argv[1]
    torch.set_num_threads(2)
    results = json.load(open(f"{run}/results.json"))
    images, labels = fmnist("t10k")
    worst = 0.0
    for r in results["phases"]:
        model, meta = load_model(f"{run}/model-phase-{r['phase']}.safetensors")
        order = [int(c) for c in meta["lucir.class_order"].split(",")]
        pos = {c: i for i, c in enumerate(order)}
        keep = np.isin(labels, order)
        x = normalise(images[keep], torch.float32)
        y = torch.tensor([pos[int(c)] for c in labels[keep]])
        with torch.no_grad():
            pred = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
        acc = 100.0 * (pred == y).double().mean().item()
        diff = acc - r["acc_cnn"]
        worst = max(worst, abs(diff))
        print(f"phase {r['phase']}: {len(order)} classes, PyTorch CNN {acc:.2f}%, "
              f"run reported {r['acc_cnn']:.2f}% (difference {diff:+.3f} points)")
    print(f"largest difference: {worst:.3f} points")


if __name__ == "__main__":
    main()
