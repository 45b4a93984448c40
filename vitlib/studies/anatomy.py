"""Chapter 1 (anatomy of a ViT): ViT against SimpleViT at the chapter's small configuration.

The ``anatomy`` bench suite times both models, interleaved, in inference and in a training step.
"""
from __future__ import annotations

import torch

from ..bench import compare, count_parameters, format_table, register_suite
from ..models import MODELS

__all__ = ["ANATOMY_CONFIG", "anatomy_suite"]

#: The small ViT of chapter 1 in quick mode (and of the anatomy suite): 32-pixel images cut into
#: 4-pixel patches (64 tokens), width 128, four layers of four heads.
ANATOMY_CONFIG = dict(image_size=32, patch_size=4, num_classes=10, dim=128, depth=4, heads=4, dim_head=32,
                      mlp_dim=256)


@register_suite("anatomy")
def anatomy_suite(args) -> dict:
    """ViT against SimpleViT at the book's chapter-1 configuration: inference and training."""
    device = torch.device(args.device)
    cfg = dict(ANATOMY_CONFIG)
    torch.manual_seed(0)
    models = {"ViT": MODELS["vit"](**cfg).to(device), "SimpleViT": MODELS["simple_vit"](**cfg).to(device)}
    x = models["ViT"].example_input(args.batch, device)
    figures: dict = {"config": cfg, "batch": args.batch}
    for mode in ("inference", "train"):
        df = compare({k: (m, x) for k, m in models.items()}, mode=mode, rounds=args.rounds,
                     min_run_time=args.min_run_time, num_threads=args.threads)
        print(f"\n{mode} (batch {args.batch}, median of {args.rounds} interleaved rounds, "
              f"{df.attrs['threads']} threads, {device})")
        print(format_table(df))
        figures[mode] = df.reset_index().to_dict(orient="records")
        figures[f"simple_vit_{mode}_speedup"] = float(df.loc["SimpleViT", "speedup"])
    figures["params"] = {k: count_parameters(m) for k, m in models.items()}
    return figures
