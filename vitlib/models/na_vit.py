"""NaViT (Dehghani et al., 2023, "Patch n' Pack: NaViT, a Vision Transformer for any Aspect Ratio
and Resolution").

What it changes against :class:`~vitlib.models.ViT`:

* every image keeps its own resolution and aspect ratio: it becomes as many tokens as it has
  patches, so a 64x64 image costs 16 tokens where a 224x224 one costs 196 (patch size 16);
* several images are packed into one sequence; a block-diagonal attention mask lets each token
  attend only to the tokens of its own image, so packing changes the cost, never the result;
* learned positions factorised by axis: one table for the patch row, one for the column, summed,
  so any grid up to ``image_size / patch_size`` has a position;
* token dropout: in training, each image keeps a random subset of its patches, a fixed fraction of
  them (or one given by a function of the image's height and width), rounded at random to whole
  tokens so that the nominal rate holds in expectation (``token_dropout_rounding="floor"``
  truncates, as vit-pytorch does);
* queries and keys are RMS-normalised per head (:class:`~vitlib.layers.HeadRMSNorm`);
* one learned query per image pools its tokens by attention, then LayerNorm and a bias-free
  linear classifier.

Two executions of the same model, with the same parameters (their state dicts are
interchangeable):

* :class:`NaViT` packs the images into a padded ``(sequences, tokens)`` batch and runs
  :func:`torch.nn.functional.scaled_dot_product_attention` with the block-diagonal mask. It
  packs first-fit decreasing (:func:`pack_sequences`), which pads less than vit-pytorch's in-order
  filling (:func:`pack_greedy`; compare them with :func:`padding_fraction`).
* :class:`NaViTNested` holds one sequence per image in a jagged :mod:`torch.nested` tensor: no
  padding and no mask, at the price of the limits listed in its docstring.

A forward runs in two parts. :meth:`NaViT.prepare` works on the host from the images' shapes
alone (Python ints): it checks the images, decides which image goes to which sequence and builds
small index tensors (a :class:`PackPlan`); it never reads a value back from the accelerator.
:meth:`NaViT.forward_packed` is tensor-only: it selects the kept tokens, embeds them, scatters them
into the packed batch, runs the transformer and pools. ``torch.compile`` compiles the second part
as one graph; the first runs eagerly (it is marked :func:`torch.compiler.disable`, applied on the
first call so that importing vitlib does not import the compiler, two seconds of every process).

Keyword names and forward signatures are vit-pytorch's (``vit_pytorch.na_vit.NaViT`` and
``vit_pytorch.na_vit_nested_tensor.NaViT``), and its weights convert
(:func:`vitlib.convert.from_vit_pytorch`). Kept unlike vit-pytorch: the LayerNorms have a bias
(vit-pytorch's are bias-free; converting sets the biases to zero), and the attention logits are
scaled by ``1 / sqrt(dim_head)`` after the query-key normalisation, as in ViT-22B, where
vit-pytorch's packed NaViT does not scale them (converting folds the factor into the gains); and
token dropout rounds the kept share at random, where vit-pytorch truncates it (converting sets
``token_dropout_rounding="floor"``, vit-pytorch's rule).
"""
from __future__ import annotations

import itertools
from typing import Callable, NamedTuple, Union

import torch
from torch import nn

from ..compat import disable_dynamo
from ..layers import Attention, PatchEmbedding, Transformer, patchify
from .base import VisionModel, check_num_classes, check_positive, check_probability, classifier, model_config
from .packing import (  # noqa: F401  (re-exported: NaViT's packing API)
    TOKEN_DROPOUT_ROUNDINGS,
    PackPlan,
    _shuffle_within,
    check_token_dropout_rounding,
    expected_kept_tokens,
    floor_kept_tokens,
    kept_tokens,
    max_kept_tokens,
    pack_greedy,
    pack_plan,
    pack_sequences,
    padding_fraction,
)

__all__ = [
    "NaViT",
    "NaViTNested",
    "NaViTFeatures",
    "FactorisedPosEmb2d",
    "PackPlan",
    "pack_plan",
    "kept_tokens",
    "max_kept_tokens",
    "floor_kept_tokens",
    "expected_kept_tokens",
    "TOKEN_DROPOUT_ROUNDINGS",
    "check_token_dropout_rounding",
    "pack_sequences",
    "pack_greedy",
    "padding_fraction",
]

#: A token-dropout rate: a probability, a function ``(height, width) -> probability`` of an image's
#: size in pixels, or None (no token dropout).
DropRate = Union[float, Callable[[int, int], float], None]


class NaViTFeatures(NamedTuple):
    """What :meth:`NaViT.forward_features` returns and :meth:`NaViT.forward_head` takes: the
    transformer's output ``tokens`` and the :class:`PackPlan` that says which image each token
    belongs to. For :class:`NaViT`, ``tokens`` is the packed ``(sequences, slots, dim)`` batch; for
    :class:`NaViTNested`, a jagged nested tensor with one sequence per image."""

    tokens: torch.Tensor
    plan: PackPlan


# ----- the model ---------------------------------------------------------------------------------

#: ``torch.compiler.disable`` that imports the compiler on the decorated function's first call, not at
#: import (:func:`vitlib.compat.disable_dynamo`).
_eager = disable_dynamo


class FactorisedPosEmb2d(nn.Module):
    """Learned positions factorised by axis: ``height[row] + width[col]`` for a patch at
    ``(row, col)``, so one table of ``rows + cols`` vectors covers every grid up to
    ``rows x cols``."""

    component = "positions + tokens"

    def __init__(self, grid: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.height = nn.Parameter(torch.randn(grid[0], dim).mul_(0.02))
        self.width = nn.Parameter(torch.randn(grid[1], dim).mul_(0.02))

    def forward(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.height[rows] + self.width[cols]


class NaViT(VisionModel):
    """NaViT with vit-pytorch's keyword names: images of any size up to ``image_size``, packed.

    ``forward(batched_images, group_images=True, group_max_seq_len=None)`` takes a list of
    ``(channels, height, width)`` images (sides multiples of the patch size) or a list of such
    lists, already grouped into sequences, and returns one row of logits per image, in input order
    (groups concatenated). A flat list is packed (:func:`pack_sequences`) into sequences of at most
    ``group_max_seq_len`` tokens; ``None``, the default, means the longest image's token count,
    the shortest sequences that hold every image. ``group_images=False`` makes a flat list one
    sequence. The keyword names are vit-pytorch's, the defaults not (vit-pytorch's,
    ``group_images=False`` and 2048 tokens, put a whole batch of small images in one sequence).

    Attention costs ``L^2`` per packed sequence of length ``L``, masked or not, so long sequences of
    small images waste time: on CPU a length near the longest image's token count is fastest, and
    ``fit``, ``evaluate`` and direct calls pack so by default. Packing never changes the logits.

    ``token_dropout_prob`` (training only): a probability, or a function of an image's height and
    width in pixels returning one. Image ``i`` keeps that many of its tokens, chosen at random,
    before the patch projection; ``token_dropout_rounding`` says how the count is rounded:
    ``"stochastic"`` (the default, :func:`kept_tokens`) rounds ``n * (1 - rate)`` up with
    probability its fractional part, drawn from torch's generator (``torch.manual_seed`` repeats
    it), so the nominal rate holds in expectation; ``"floor"`` (:func:`floor_kept_tokens`) is
    vit-pytorch's ``max(1, int(n * (1 - rate)))``, which keeps 2 of 4 tokens at rate 0.3. Both keep
    at least one token. Given as a number, the model pickles; a
    function given here must itself be picklable for the model to be (a lambda is not).
    ``qk_rmsnorm=False`` removes the query-key normalisation (an option of vit-pytorch's nested
    NaViT).
    """

    token_params = ("attn_pool_queries",)
    classifier_bias = False

    def __init__(
        self,
        *,
        image_size,
        patch_size,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        channels: int = 3,
        dim_head: int = 64,
        dropout: float = 0.0,
        emb_dropout: float = 0.0,
        token_dropout_prob: DropRate = None,
        token_dropout_rounding: str = "stochastic",
        qk_rmsnorm: bool = True,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_positive(dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim, channels=channels, dim_head=dim_head)
        check_probability(dropout=dropout, emb_dropout=emb_dropout)
        if token_dropout_prob is not None and not callable(token_dropout_prob):
            if isinstance(token_dropout_prob, bool) or not isinstance(token_dropout_prob, (int, float)):
                raise ValueError("token_dropout_prob must be None, a probability in [0, 1) or a function "
                                 f"(height, width) -> probability; received {token_dropout_prob!r}")
            check_probability(token_dropout_prob=token_dropout_prob)
            token_dropout_prob = float(token_dropout_prob)
        check_token_dropout_rounding(token_dropout_rounding)
        self.config = model_config(image_size=image_size, patch_size=patch_size, num_classes=num_classes, dim=dim,
                           depth=depth, heads=heads, mlp_dim=mlp_dim, channels=channels, dim_head=dim_head,
                           dropout=dropout, emb_dropout=emb_dropout, token_dropout_prob=token_dropout_prob,
                           token_dropout_rounding=token_dropout_rounding, qk_rmsnorm=qk_rmsnorm)
        self.token_dropout_prob = token_dropout_prob
        self.token_dropout_rounding = token_dropout_rounding
        self.patch_embedding = PatchEmbedding(image_size, patch_size, channels, dim, owner=type(self).__name__)
        self.patch_size = self.patch_embedding.patch_size
        self.image_size, self.channels, self.num_classes = self.patch_embedding.image_size, channels, num_classes
        self.pos_embedding = FactorisedPosEmb2d(self.patch_embedding.grid, dim)
        self.dropout = nn.Dropout(emb_dropout)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout, out_bias=False,
                                       qk_norm=qk_rmsnorm)
        self.attn_pool_queries = nn.Parameter(torch.randn(dim).mul_(0.02))
        self.attn_pool = Attention(dim, heads, dim_head, out_bias=False, qk_norm=qk_rmsnorm)
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim
        self.head = classifier(dim, num_classes, bias=False)

    def example_input(self, batch: int = 1, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> list[torch.Tensor]:
        """A list of ``batch`` random images of mixed sizes the model accepts: in turn the full
        ``image_size``, half its height, half its width and a quarter of both (whole patches)."""
        (mh, mw), (ph, pw) = self.image_size, self.patch_size
        sizes = [(mh, mw), (max(ph, mh // 2 // ph * ph), mw), (mh, max(pw, mw // 2 // pw * pw)),
                 (max(ph, mh // 4 // ph * ph), max(pw, mw // 4 // pw * pw))]
        device = self.device if device is None else device
        return [torch.randn(self.channels, *sizes[i % len(sizes)], device=device, dtype=dtype or self.dtype)
                for i in range(batch)]

    def check_input(self, images) -> None:
        """Raise ValueError naming what was expected when ``images`` is not a list of images (or
        of lists of images) that this model accepts."""
        flat, _ = self._flatten(images)
        for i, img in enumerate(flat):
            self._grid(img, i)

    def parts(self) -> dict[str, list[str]]:
        return {"patch embedding": ["patch_embedding", "pos_embedding"], "transformer": ["transformer"],
                "attention pooling": ["attn_pool_queries", "attn_pool"], "head": ["norm", "head"]}

    # ----- host side: checks and plan --------------------------------------------------------

    def token_dropout_prob_of(self, height: int, width: int) -> float:
        """Token-dropout rate of an image of ``height x width`` pixels (0 without token dropout)."""
        p = self.token_dropout_prob
        if p is None:
            return 0.0
        rate = p(height, width) if callable(p) else p
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"token_dropout_prob({height}, {width}) must return a probability in [0, 1); "
                             f"received {rate!r}")
        return float(rate)

    def _flatten(self, batched_images) -> tuple[list[torch.Tensor], list[list[int]] | None]:
        """The images in input order, and the groups when the caller gave a list of lists."""
        name = type(self).__name__
        expected = "a list of (channels, height, width) image tensors, or a list of such lists"
        if isinstance(batched_images, torch.Tensor):
            raise ValueError(f"{name} expects {expected}; received a tensor of shape {tuple(batched_images.shape)}"
                             " (for a batch of equal-sized images, pass list(batch))")
        if not isinstance(batched_images, (list, tuple)):
            raise ValueError(f"{name} expects {expected}; received {type(batched_images).__name__}")
        if len(batched_images) == 0:
            raise ValueError(f"{name} expects {expected}; received an empty list")
        if all(isinstance(item, (list, tuple)) for item in batched_images):
            images, groups = [], []
            for g, group in enumerate(batched_images):
                if len(group) == 0:
                    raise ValueError(f"{name} expects non-empty groups of images; received an empty group at index {g}")
                groups.append(list(range(len(images), len(images) + len(group))))
                images.extend(group)
            return images, groups
        if any(isinstance(item, (list, tuple)) for item in batched_images):
            raise ValueError(f"{name} expects {expected}; received a list mixing images and lists")
        return list(batched_images), None

    def _grid(self, img, index: int) -> tuple[int, int]:
        """Check one image and return its patch grid (rows, columns)."""
        name = type(self).__name__
        (ph, pw), (mh, mw) = self.patch_size, self.patch_embedding.image_size
        c = self.channels
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"{name} expects image tensors of shape ({c}, height, width); received "
                            f"{type(img).__name__} at index {index}")
        if img.ndim != 3:
            hint = " (pass a list of images, e.g. list(batch))" if img.ndim == 4 else ""
            raise ValueError(f"{name} expects images of shape ({c}, height, width); received a {img.ndim}-D tensor "
                             f"of shape {tuple(img.shape)} at index {index}{hint}")
        if not img.is_floating_point():
            raise ValueError(f"{name} expects float images; received dtype {img.dtype} at index {index}")
        if img.dtype != self.dtype and not torch.is_autocast_enabled(img.device.type):
            raise ValueError(f"{name} holds {self.dtype} weights and expects {self.dtype} images; received dtype "
                             f"{img.dtype} at index {index} (convert with img.to({self.dtype}))")
        if img.shape[0] != c:
            raise ValueError(f"{name} expects {c} channels, i.e. images of shape ({c}, height, width); received "
                             f"{img.shape[0]} channels (shape {tuple(img.shape)}) at index {index}")
        h, w = img.shape[-2:]
        if h % ph or w % pw or h == 0 or w == 0:
            raise ValueError(f"{name} expects image sides that are positive multiples of the patch size {ph}x{pw}; "
                             f"received {h}x{w} at index {index}")
        if h > mh or w > mw:
            raise ValueError(f"{name} has positions for images up to image_size {mh}x{mw}; received {h}x{w} at "
                             f"index {index} (resize it, or build the model with a larger image_size)")
        return h // ph, w // pw

    def _kept(self, images: list[torch.Tensor], grids: list[tuple[int, int]]) -> list[int]:
        counts = [gh * gw for gh, gw in grids]
        if not self.training or self.token_dropout_prob is None:
            return counts
        rates = [self.token_dropout_prob_of(*img.shape[-2:]) for img in images]
        if check_token_dropout_rounding(self.token_dropout_rounding) == "floor":  # set after __init__ too
            return [floor_kept_tokens(n, rate) for n, rate in zip(counts, rates)]
        draws = torch.rand(len(images)).tolist()  # the host's generator: no wait for the device
        return [kept_tokens(n, rate, u) for n, rate, u in zip(counts, rates, draws)]

    @_eager
    def prepare(
        self, batched_images, group_images: bool = True, group_max_seq_len: int | None = None
    ) -> tuple[torch.Tensor, PackPlan]:
        """Host side of :meth:`forward`: check the images, cut them into patches and plan the packing.

        Returns ``(patches, plan)``: all patches ``(T, patch_dim)``, images in input order, and the
        :class:`PackPlan` on the patches' device. Reads shapes only; never synchronises with the
        device.
        """
        images, groups = self._flatten(batched_images)
        grids = [self._grid(img, i) for i, img in enumerate(images)]
        lengths = self._kept(images, grids)
        if groups is None and group_images:
            counts = [int(n) for n in lengths]  # under torch.jit.trace a shape, and so a count, is a tensor
            if group_max_seq_len is None:
                group_max_seq_len = max(counts)
            if isinstance(group_max_seq_len, bool) or not isinstance(group_max_seq_len, int) or group_max_seq_len < 1:
                raise ValueError(f"group_max_seq_len must be a positive int or None; received {group_max_seq_len!r}")
            longest = max(range(len(images)), key=lambda i: counts[i])
            if counts[longest] > group_max_seq_len:
                h, w = images[longest].shape[-2:]
                raise ValueError(
                    f"group_max_seq_len={group_max_seq_len} tokens is shorter than image {longest} ({h}x{w} pixels, "
                    f"{counts[longest]} tokens); raise group_max_seq_len to at least {counts[longest]}")
            groups = pack_sequences(counts, group_max_seq_len)
        elif groups is None:
            groups = [list(range(len(images)))]
        patches = torch.cat([patchify(img, self.patch_size) for img in images])
        return patches, pack_plan(grids, lengths, groups).to(patches.device)

    # ----- device side: tensors only ---------------------------------------------------------

    def embed(self, patches: torch.Tensor, plan: PackPlan) -> torch.Tensor:
        """Kept tokens ``(K, dim)``: token dropout (a random subset of each image's patches, before
        the projection, so dropped tokens cost nothing), projection, positions, dropout."""
        rows, cols = plan.rows, plan.cols
        if plan.keep is not None:
            chosen = _shuffle_within(plan.image_of_token)[plan.keep]
            patches, rows, cols = patches[chosen], rows[chosen], cols[chosen]
        return self.dropout(self.patch_embedding.project(patches) + self.pos_embedding(rows, cols))

    def encode(self, patches: torch.Tensor, plan: PackPlan) -> NaViTFeatures:
        """:meth:`prepare`'s output to the transformer's packed tokens; tensor operations only.

        Tokens of one sequence attend to the tokens of their own image (``ids`` equal). Padding
        slots carry -1, so they attend to each other: no row of the softmax is fully masked (which
        would make NaN), and no image attends to padding.
        """
        x = self.embed(patches, plan)
        g, seq_len = plan.ids.shape
        x = x.new_zeros(g * seq_len, x.shape[-1]).index_copy(0, plan.dest, x)
        x = x.view(g, seq_len, -1)
        ids = plan.ids
        mask = (ids[:, :, None] == ids[:, None, :])[:, None]  # (sequences, 1, slots, slots)
        return NaViTFeatures(self.transformer(x, mask=mask), plan)

    def forward_packed(self, patches: torch.Tensor, plan: PackPlan) -> torch.Tensor:
        """Logits ``(N, num_classes)`` from :meth:`prepare`'s output; tensor operations only."""
        return self.forward_head(self.encode(patches, plan))

    def forward_features(self, batched_images, group_images: bool = True,
                         group_max_seq_len: int | None = None) -> NaViTFeatures:
        """Images (as :meth:`forward` takes them) to the transformer's packed tokens and their
        :class:`PackPlan`, which :meth:`forward_head` needs to pool each image."""
        return self.encode(*self.prepare(batched_images, group_images, group_max_seq_len))

    def _check_features(self, features) -> NaViTFeatures:
        if not isinstance(features, NaViTFeatures):
            raise ValueError(f"{type(self).__name__}'s head expects forward_features' output, a NaViTFeatures "
                             f"(tokens, plan); received {type(features).__name__}")
        return features

    def pool_features(self, features: NaViTFeatures) -> torch.Tensor:
        """Attention pooling (one learned query per image, over its own tokens), then LayerNorm:
        ``(N, dim)``, one row per image in input order. Pooling has ``Q`` query slots per
        sequence; a slot without an image attends everywhere and is dropped by ``out_index``."""
        x, plan = self._check_features(features)
        g, ids = x.shape[0], plan.ids
        q = plan.empty_queries.shape[1]
        slots = torch.arange(q, device=ids.device)
        pool_mask = (slots[None, :, None] == ids[:, None, :]) | plan.empty_queries[:, :, None]
        queries = self.attn_pool_queries.repeat(g, q, 1)  # a copy: a view of a parameter under no_grad confuses hooks
        pooled = self.attn_pool(queries, context=x, mask=pool_mask[:, None]) + queries
        return self.norm(pooled.reshape(g * q, -1)[plan.out_index])

    def forward(self, batched_images, group_images: bool = True, group_max_seq_len: int | None = None):
        patches, plan = self.prepare(batched_images, group_images, group_max_seq_len)
        return self.forward_packed(patches, plan)


class NaViTNested(NaViT):
    """NaViT on jagged nested tensors: one sequence per image, no padding, no attention mask.

    The constructor is :class:`NaViT`'s, whose keyword names cover vit-pytorch's
    ``na_vit_nested_tensor.NaViT`` (``token_dropout_prob`` may also be a function, and
    ``token_dropout_rounding`` is :class:`NaViT`'s); ``forward(images)`` takes a flat list of
    ``(channels, height, width)`` images and returns one row of logits per image. The parameters
    are :class:`NaViT`'s: a state dict of one loads into the other, and both give the same logits.
    Unlike vit-pytorch's, it trains with its defaults (no token dropout).

    Limits, from :mod:`torch.nested` (torch 2.x):

    * ``torch.export`` and ONNX export do not take nested tensors: :meth:`forward` raises
      NotImplementedError when exported; export a :class:`NaViT` with the same weights instead.
    * Quantisation (``torch.ao.quantization``) has no kernels for nested tensors; quantise a
      :class:`NaViT` instead.
    * On CPU, torch's jagged ``scaled_dot_product_attention`` has no fused kernel: it falls back to
      a math path that copies each sequence out, reads the lengths back to the host and multiplies
      per sequence. It needs contiguous ``(batch, tokens, heads, dim_head)`` queries, keys and
      values (:class:`~vitlib.layers.Attention` makes them so); on non-contiguous ones it finds no
      backend at all. ``F.normalize`` is missing for nested tensors, hence the RMS norm through
      ``F.rms_norm``. Fused kernels (flash, memory-efficient) exist on CUDA.
    """

    def forward(self, images) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def forward_features(self, images) -> NaViTFeatures:
        """A flat list of images to the transformer's tokens, one jagged sequence per image, and
        their :class:`PackPlan`."""
        if torch.compiler.is_exporting():
            raise NotImplementedError("NaViTNested runs on nested tensors, which torch.export and ONNX export do not "
                                      "support; load its state dict into a NaViT and export that")
        images, groups = self._flatten(images)
        if groups is not None:
            raise ValueError("NaViTNested expects a flat list of (channels, height, width) images; received a list of "
                             "lists (grouping is NaViT's; here every image is its own sequence)")
        patches, plan = self.prepare(images, group_images=False)
        x = self.embed(patches, plan)
        lengths = plan.lengths
        offsets = torch.tensor(list(itertools.accumulate(lengths, initial=0))).to(x.device, non_blocking=True)
        x = torch.nested.nested_tensor_from_jagged(x, offsets=offsets, min_seqlen=min(lengths), max_seqlen=max(lengths))
        try:
            x = self.transformer(x)
        except NotImplementedError as err:
            raise NotImplementedError(
                f"NaViTNested: torch has no nested-tensor kernel for an operation ({str(err).splitlines()[0]}); "
                "quantised layers (torch.ao.quantization) have none: quantise a NaViT with the same weights instead"
            ) from err
        return NaViTFeatures(x, plan)

    def pool_features(self, features: NaViTFeatures) -> torch.Tensor:
        """Attention pooling of each image's sequence, then LayerNorm: ``(N, dim)``."""
        x, plan = self._check_features(features)
        n = len(plan.lengths)
        queries = torch.nested.nested_tensor_from_jagged(
            self.attn_pool_queries.expand(n, -1), offsets=torch.arange(n + 1, device=x.device), min_seqlen=1,
            max_seqlen=1)
        pooled = self.attn_pool(queries, context=x) + queries
        return self.norm(pooled.values())
