"""Chapter 5 (NaViT): mixed resolutions packed into sequences, and token dropout.

The workload (random images of several sizes), padding or resizing them for a plain ViT, token
counts, packing quality and what each batch layout computes (:func:`batch_layouts`), and why
NaViT normalises queries and keys (:func:`qk_norm_sharpness`). Training steps and runs, timed, are
:mod:`vitlib.book.studies.navit_training`. Token dropout is ``token_dropout_prob`` everywhere, as in
:class:`~vitlib.models.NaViT`.
"""
from __future__ import annotations

import statistics
from typing import Iterable

import torch
import torch.nn.functional as F

from ...layers import pair
from ...models.state import private_rng
from ...models.na_vit import (
    check_token_dropout_rounding,
    expected_kept_tokens,
    floor_kept_tokens,
    max_kept_tokens,
    pack_greedy,
    pack_sequences,
    padding_fraction,
)
from ...train import RECIPES

__all__ = ["NAVIT_SIZES", "NAVIT_CONFIG", "NAVIT_FORWARD", "navit_workload", "pad_images", "resize_images",
           "mean_token_size", "batch_layouts", "navit_token_counts", "expected_tokens", "packing_padding",
           "random_packing", "qk_norm_sharpness"]

#: Image sizes (height, width) of the NaViT workload: squares and both orientations, 64 to 224 pixels.
NAVIT_SIZES = ((64, 64), (96, 160), (128, 128), (160, 96), (224, 160), (224, 224))
#: The model the NaViT suite trains: ViT-Tiny's width and heads, six layers, 16-pixel patches.
NAVIT_CONFIG = dict(patch_size=16, num_classes=10, dim=192, depth=6, heads=3, dim_head=64, mlp_dim=768)
#: How NaViT is called in training: the recipe's packing into sequences no longer than the longest
#: image (after token dropout), never one sequence for the whole batch.
NAVIT_FORWARD = dict(RECIPES["quick"]["navit"]["fit"]["forward_kwargs"])


def navit_workload(
    num_images: int = 32,
    sizes=NAVIT_SIZES,
    *,
    channels: int = 3,
    num_classes: int = 10,
    seed: int = 0,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``num_images`` random images, each of a size drawn uniformly from ``sizes`` (ints or
    ``(height, width)`` pairs), and random labels in ``[0, num_classes)``; reproducible from ``seed``."""
    sizes = [pair(s, "size") for s in sizes]
    if not sizes or num_images < 1:
        raise ValueError(f"navit_workload needs at least one size and one image; received sizes={sizes!r}, "
                         f"num_images={num_images!r}")
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(sizes), (num_images,), generator=gen).tolist()
    images = [torch.randn(channels, *sizes[i], generator=gen) for i in picks]
    return images, torch.randint(num_classes, (num_images,), generator=gen)


def pad_images(images: list[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Stack ``(c, h, w)`` images into one ``(n, c, H, W)`` batch, zero-padded at the bottom and
    right to ``size`` (default: the largest height and width among them)."""
    h = max(img.shape[-2] for img in images) if size is None else size[0]
    w = max(img.shape[-1] for img in images) if size is None else size[1]
    out = images[0].new_zeros(len(images), images[0].shape[0], h, w)
    for i, img in enumerate(images):
        out[i, :, : img.shape[-2], : img.shape[-1]] = img
    return out


def resize_images(images: list[torch.Tensor], size) -> torch.Tensor:
    """Resize ``(c, h, w)`` images (bilinear) to one ``size`` (an int or ``(height, width)``) and
    stack them into an ``(n, c, height, width)`` batch: the fixed-size input of an ordinary ViT."""
    size = pair(size, "size")
    return torch.cat([F.interpolate(img[None], size=size, mode="bilinear", align_corners=False)
                      for img in images])


def mean_token_size(images: list[torch.Tensor], patch_size: int) -> tuple[int, int]:
    """The images' own size (height, width) whose token count at ``patch_size`` is nearest their
    mean token count (the larger on a tie): one size to resize every image to for a ViT batch that
    holds about as many tokens as the images do at their own sizes."""
    sizes = sorted({tuple(img.shape[-2:]) for img in images})
    tokens = {s: (s[0] // patch_size) * (s[1] // patch_size) for s in sizes}
    mean = statistics.fmean(tokens[tuple(img.shape[-2:])] for img in images)
    return min(sizes, key=lambda s: (abs(tokens[s] - mean), -tokens[s]))


def batch_layouts(images: list[torch.Tensor], patch_size: int, resize_to=None,
                  max_len: int | None = None) -> list[dict]:
    """What one transformer layer computes on ``images`` in each batch layout, counted from their
    shapes (class tokens and pooling queries left out): ``"ViT, padded"`` (zero-padded to the
    largest height and width), ``"ViT, resized"`` (to ``resize_to``, when given), ``"NaViT,
    packed"`` (first-fit decreasing into sequences of at most ``max_len`` tokens, default the
    longest image) and ``"vit-pytorch, packed in order"`` (its in-order packing, same length).
    One row per layout: ``layout``, ``input`` (the shape in words), ``slots`` (token positions
    the linear layers and MLP compute), ``padding`` (the share of them that hold no image),
    ``scores`` (query-key entries attention computes, per head) and ``own_image`` (the share of
    those between two tokens of one image: the rest are padding or, packed, masked out)."""
    p = patch_size
    grids = [(img.shape[-2] // p, img.shape[-1] // p) for img in images]
    lengths = [h * w for h, w in grids]
    real, own = sum(lengths), sum(n * n for n in lengths)
    n = len(images)
    height, width = max(img.shape[-2] for img in images), max(img.shape[-1] for img in images)
    full = (height // p) * (width // p)
    rows = [{"layout": "ViT, padded", "input": f"{n} x {height}x{width}", "slots": n * full,
             "padding": 1 - real / (n * full), "scores": n * full ** 2, "own_image": own / (n * full ** 2)}]
    if resize_to is not None:
        rh, rw = pair(resize_to, "resize_to")
        t = (rh // p) * (rw // p)
        rows.append({"layout": "ViT, resized", "input": f"{n} x {rh}x{rw}", "slots": n * t, "padding": 0.0,
                     "scores": n * t * t, "own_image": 1.0})
    max_len = max(lengths) if max_len is None else max_len
    for name, packer in (("NaViT, packed", pack_sequences), ("vit-pytorch, packed in order", pack_greedy)):
        groups = packer(lengths, max_len)
        longest = max(sum(lengths[i] for i in g) for g in groups)
        rows.append({"layout": name, "input": f"{len(groups)} sequences x {longest}",
                     "slots": len(groups) * longest, "padding": padding_fraction(lengths, groups),
                     "scores": len(groups) * longest ** 2, "own_image": own / (len(groups) * longest ** 2)})
    return rows


def navit_token_counts(images: list[torch.Tensor], patch_size: int, token_dropout_prob: float = 0.0,
                       token_dropout_rounding: str = "stochastic") -> list[int]:
    """Tokens per image at ``patch_size``; under token dropout at ``token_dropout_prob``, the most
    an image can keep, rounded as :class:`~vitlib.models.NaViT`'s ``token_dropout_rounding``:
    :func:`~vitlib.models.na_vit.max_kept_tokens` when stochastic (it keeps the nominal share on
    average), :func:`~vitlib.models.na_vit.floor_kept_tokens` (every time) when ``"floor"``. A
    bound for the packed sequence length."""
    check_token_dropout_rounding(token_dropout_rounding)
    counts = [(img.shape[-2] // patch_size) * (img.shape[-1] // patch_size) for img in images]
    most = floor_kept_tokens if token_dropout_rounding == "floor" else max_kept_tokens
    return [most(n, token_dropout_prob) for n in counts]


def expected_tokens(images: list[torch.Tensor], patch_size: int, token_dropout_prob: float = 0.0,
                    token_dropout_rounding: str = "stochastic") -> float:
    """Tokens a step over ``images`` processes on average under token dropout at
    ``token_dropout_prob``, rounded as ``token_dropout_rounding``
    (:func:`~vitlib.models.na_vit.expected_kept_tokens`): stochastic rounding keeps exactly
    ``max(1, tokens * (1 - p))`` of an image on average, ``"floor"`` ``max(1, int(tokens * (1 - p)))``."""
    check_token_dropout_rounding(token_dropout_rounding)
    counts = [(img.shape[-2] // patch_size) * (img.shape[-1] // patch_size) for img in images]
    return sum(expected_kept_tokens(n, token_dropout_prob, token_dropout_rounding) for n in counts)


def packing_padding(lengths: list[int], max_lens: Iterable[int | None] = (None,)) -> list[dict]:
    """Padding fraction of first-fit-decreasing packing (vitlib's NaViT) and of in-order greedy
    packing (vit-pytorch's) for each maximum sequence length (None: the longest length). One
    row per length: ``max_len``, ``sequences_ours``, ``sequences_greedy``, ``padding_ours``,
    ``padding_greedy``."""
    rows = []
    for max_len in max_lens:
        max_len = max(lengths) if max_len is None else max_len
        ours, greedy = pack_sequences(lengths, max_len), pack_greedy(lengths, max_len)
        rows.append({"max_len": max_len, "sequences_ours": len(ours), "sequences_greedy": len(greedy),
                     "padding_ours": padding_fraction(lengths, ours),
                     "padding_greedy": padding_fraction(lengths, greedy)})
    return rows


def random_packing(trials: int = 200, lengths=(16, 40, 60, 64, 96, 140, 196), max_lens=(256, 512), *,
                   images=(8, 64), seed: int = 0):
    """Padding fraction of vitlib's packing and vit-pytorch's on ``trials`` random batches: each
    batch holds between ``images[0]`` and ``images[1]`` images whose token counts are drawn from
    ``lengths``, packed into sequences of at most each of ``max_lens`` tokens. A DataFrame with
    ``trial``, ``max_len``, ``ours`` and ``greedy``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for trial in range(trials):
        batch = [int(v) for v in rng.choice(lengths, size=rng.integers(*images))]
        for max_len in max_lens:
            rows.append({"trial": trial, "max_len": max_len,
                         "ours": padding_fraction(batch, pack_sequences(batch, max_len)),
                         "greedy": padding_fraction(batch, pack_greedy(batch, max_len))})
    return pd.DataFrame(rows)


def qk_norm_sharpness(weight_scales=(1, 4, 16), *, dim: int = 32, heads: int = 2, dim_head: int = 16,
                      tokens: int = 16, seed: int = 0) -> list[dict]:
    """What growing weights do to attention, with and without query-key normalisation: one
    attention layer on fixed random tokens, its query-key-value weights multiplied by each of
    ``weight_scales``. Rows: ``qk_norm``, ``scale``, ``largest_weight`` (a query's largest attention
    weight, averaged over queries and heads: ``1 / tokens`` is uniform, 1 all on one token)."""
    from ...layers import Attention

    x = torch.randn(1, tokens, dim, generator=torch.Generator().manual_seed(seed))
    rows = []
    for qk_norm in (False, True):
        with private_rng(seed):  # the same weights with and without; the caller's random state kept
            layer = Attention(dim, heads, dim_head, qk_norm=qk_norm).eval()
        weight = layer.to_qkv.weight.detach().clone()
        for scale in weight_scales:
            with torch.no_grad():
                layer.to_qkv.weight.copy_(weight * scale)
                _, attn = layer(x, return_attn=True)
            rows.append({"qk_norm": qk_norm, "scale": scale, "largest_weight": float(attn.amax(-1).mean())})
    return rows
