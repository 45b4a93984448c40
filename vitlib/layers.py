"""Blocks shared by every model in vitlib.

Layout follows vit-pytorch (pre-norm attention and MLP inside each block, patches flattened in
``(p1 p2 c)`` order, LayerNorm before and after the patch projection) so that its weights map onto
these modules one to one (see :mod:`vitlib.convert`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backends import (
    ATTENTION_BACKENDS,
    attention_backend,
    available_attention_backends,
    current_attention_backend,
    linear,
    onednn_linear,
    sdpa,
)
from .compat import forward_hooks_active

__all__ = [
    "pair",
    "check_images",
    "attention",
    "attention_backend",
    "current_attention_backend",
    "available_attention_backends",
    "ATTENTION_BACKENDS",
    "onednn_linear",
    "AttentionCall",
    "record_attention",
    "HeadRMSNorm",
    "Attention",
    "FeedForward",
    "Block",
    "Transformer",
    "patchify",
    "PatchEmbedding",
    "posemb_sincos_2d",
    "SinCosPosEmb2d",
]


def pair(value: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """``7 -> (7, 7)``; ``(7, 9) -> (7, 9)``. Anything else raises ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        out = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        out = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints (height, width); received {value!r}")
    if min(out) < 1:
        raise ValueError(f"{name} must be positive; received {value!r}")
    return out


def check_images(img: torch.Tensor, channels: int, size: tuple[int, int], owner: str,
                 dtype: torch.dtype | None = None) -> None:
    """Raise a ValueError naming what was expected when ``img`` is not a batch of images of ``size``
    (and, when ``dtype`` is given, of the model's floating-point dtype)."""
    h, w = size
    expected = f"a float tensor of shape (batch, {channels}, {h}, {w})"
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{owner} expects {expected}; received {type(img).__name__}")
    if img.ndim != 4:
        hint = " (for a single image, use img.unsqueeze(0))" if img.ndim == 3 else ""
        raise ValueError(
            f"{owner} expects {expected}; received a {img.ndim}-D tensor of shape {tuple(img.shape)}{hint}"
        )
    if not img.is_floating_point():
        raise ValueError(
            f"{owner} expects {expected}; received dtype {img.dtype} (convert with img.float() / 255)"
        )
    if dtype is not None and img.dtype != dtype and not torch.is_autocast_enabled(img.device.type):
        raise ValueError(
            f"{owner} holds {dtype} weights and expects {dtype} images; received dtype {img.dtype} "
            f"(convert with img.to({dtype}), or the model with model.to({img.dtype}))"
        )
    if img.shape[1] != channels:
        raise ValueError(
            f"{owner} expects {channels} channels, i.e. {expected}; received {img.shape[1]} channels "
            f"in a tensor of shape {tuple(img.shape)}"
        )
    if tuple(img.shape[-2:]) != (h, w):
        raise ValueError(
            f"{owner} expects images of {h}x{w} pixels, i.e. {expected}; received {img.shape[-2]}x"
            f"{img.shape[-1]} in a tensor of shape {tuple(img.shape)} (resize the images, or build the "
            f"model with image_size={(img.shape[-2], img.shape[-1])})"
        )


@dataclass
class AttentionCall:
    """One call of :func:`attention` seen by :func:`record_attention`: the attention module that made
    it (its qualified name in the model, or ``""``), the sizes of its score tensor and, when maps
    were asked for, the attention matrix ``(batch, heads, queries, keys)``."""

    module: str
    batch: int
    heads: int
    queries: int
    keys: int
    map: torch.Tensor | None = None

    @property
    def entries(self) -> int:
        """Scores computed per sequence: ``heads * queries * keys``."""
        return self.heads * self.queries * self.keys


_RECORDERS: list["record_attention"] = []


class record_attention:
    """Record every call of :func:`attention` made inside the ``with`` block.

    ``with record_attention(model, maps=True) as calls: model(x)`` leaves in ``calls`` (a list of
    :class:`AttentionCall`) one entry per attention computed, named after the module of ``model``
    that made it (the innermost module whose ``component`` is ``"attention"``). With ``maps=True``
    the plain path runs and each entry keeps its attention matrix; otherwise the model runs as it
    would (fused or not) and only the sizes are kept. This is how measuring code counts attention
    scores and how every model draws its attention maps, whatever its family.
    """

    def __init__(self, model: nn.Module | None = None, maps: bool = False) -> None:
        self.model, self.maps = model, maps
        self.calls: list[AttentionCall] = []
        self._stack: list[str] = []
        self._hooks: list = []

    def __enter__(self) -> list[AttentionCall]:
        if self.model is not None:
            for name, mod in self.model.named_modules():
                if getattr(mod, "component", None) == "attention":
                    self._hooks.append(mod.register_forward_pre_hook(self._enter_module(name)))
                    self._hooks.append(mod.register_forward_hook(self._leave_module))
        _RECORDERS.append(self)
        return self.calls

    def __exit__(self, *exc) -> None:
        _RECORDERS.remove(self)
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _enter_module(self, name: str):
        def hook(module, args) -> None:
            self._stack.append(name)
        return hook

    def _leave_module(self, module, args, output) -> None:
        self._stack.pop()

    def add(self, q: torch.Tensor, k: torch.Tensor, attn: torch.Tensor | None) -> None:
        if q.is_nested:
            raise ValueError("record_attention needs padded (batch, heads, tokens, dim) tensors; received nested "
                             "tensors (NaViTNested): record a NaViT with the same weights instead")
        b, h, n, _ = q.shape
        self.calls.append(AttentionCall(self._stack[-1] if self._stack else "", int(b), int(h), int(n),
                                        int(k.shape[-2]), None if attn is None else attn.detach()))


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    fused: bool = True,
    bias: torch.Tensor | None = None,
    *,
    maps: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention over ``(batch, heads, tokens, dim_head)`` tensors.

    The fused path calls :func:`torch.nn.functional.scaled_dot_product_attention`, which picks a
    fused kernel (flash or memory-efficient) and never materialises the ``tokens x tokens`` matrix;
    it returns ``(out, None)``. The plain path is the textbook computation
    ``softmax(q k^T / sqrt(d)) v`` and also returns the attention matrix, for pictures. Which runs:
    the plain path when ``maps=True`` (the caller needs the matrix) or inside
    ``record_attention(maps=True)``; else the backend of the enclosing :class:`attention_backend`
    block (``"plain"``, ``"sdpa"`` or one SDPA kernel, see :mod:`vitlib.backends`); outside any
    block, SDPA if ``fused`` else the plain path.

    Queries and keys may differ in number (cross-attention) and ``v`` may have another head size
    than ``q`` and ``k``. ``bias``, if given, broadcasts to ``(batch, heads, queries, keys)``: a
    float tensor is added to the scaled scores before the softmax (LeViT's learned attention bias);
    a boolean tensor is a mask, True where a query may attend to a key (NaViT's packed sequences).
    Every query must be allowed at least one key, or its row of the softmax is NaN.
    Inside :class:`record_attention` the call is recorded (and runs the plain path when maps are kept).
    """
    recorder = _RECORDERS[-1] if _RECORDERS else None
    backend = current_attention_backend()
    plain = (maps or (recorder is not None and recorder.maps) or backend == "plain"
             or (backend is None and not fused))
    if not plain:
        out, attn = sdpa(q, k, v, bias, dropout_p, backend), None
    else:
        if q.is_nested:
            raise ValueError("the plain attention path needs padded (batch, heads, tokens, dim) tensors; "
                             "received nested tensors (NaViTNested): use an SDPA backend, or a NaViT with "
                             "the same weights")
        scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        if bias is not None and bias.dtype == torch.bool:
            scores = scores.masked_fill(~bias, float("-inf"))
        elif bias is not None:
            scores = scores + bias
        attn = scores.softmax(dim=-1)
        out = torch.matmul(F.dropout(attn, dropout_p) if dropout_p > 0 else attn, v)
    if recorder is not None:
        recorder.add(q, k, attn if recorder.maps else None)
    return out, attn


class HeadRMSNorm(nn.Module):
    """RMS normalisation of each head's query or key vector, with a learned gain per head and channel.

    ``x / rms(x) * weight`` over the last dimension of a ``(..., heads, dim_head)`` tensor (rms: the
    root of the mean square). Normalising queries and keys bounds the attention logits, which keeps
    training stable (Dehghani et al., 2023, ViT-22B; used by NaViT). Written with
    :func:`torch.nn.functional.rms_norm` and a ``(heads, dim_head)`` gain so that it also works on
    jagged nested tensors (``F.normalize`` does not, nor does broadcasting a ``(heads, 1, dim_head)``
    gain after the heads are moved in front of the tokens).
    """

    no_decay_params = ("weight",)  # a norm's gain, though 2-D

    def __init__(self, heads: int, dim_head: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(heads, dim_head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), eps=self.eps) * self.weight


class Attention(nn.Module):
    """Pre-norm multi-head self-attention: ``to_out(attend(to_qkv(norm(x))))``.

    ``fused`` selects SDPA (default) or the plain path where no :func:`attention_backend` block
    decides; ``forward(x, return_attn=True)`` always takes the plain path and returns
    ``(out, attn)`` with ``attn`` of shape ``(batch, heads, tokens, tokens)``. ``residual=r``
    returns ``r + out`` (:class:`Block` passes its input: the sum then shares the output
    projection's pass where :func:`vitlib.backends.linear` fuses it).

    Cross-attention: ``forward(x, context=c)`` takes the queries from ``norm(x)`` and the keys and
    values from ``c`` (used as given: it is normally another encoder's normalised output);
    ``kv_include_self=True`` prepends ``norm(x)`` to ``c`` so that a token also attends to itself
    (CrossViT's class tokens). ``to_qkv``'s rows are the query projection followed by the key and
    value projections, so the cross path applies its first third to ``x`` and the rest to the
    context: one set of weights, the same parameters and names as for self-attention.

    ``qk_norm=True`` normalises each head's queries and keys (:class:`HeadRMSNorm`, NaViT).
    ``forward(x, mask=m)`` restricts who attends to whom: ``m`` is a boolean tensor (True: may
    attend) or a float bias, broadcasting to ``(batch, heads, queries, keys)``; see :func:`attention`.
    The input may be a jagged nested tensor ``(batch, ragged tokens, dim)`` (no mask then).
    """

    component = "attention"  # what measuring code files this module under (see VisionModel.components)

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        out_bias: bool = True,
        fused: bool = True,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.attn_dropout = dropout
        self.fused = fused
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.q_norm = HeadRMSNorm(heads, dim_head) if qk_norm else None
        self.k_norm = HeadRMSNorm(heads, dim_head) if qk_norm else None
        self.to_out = nn.Linear(inner, dim, bias=out_bias)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        return_attn: bool = False,
        *,
        context: torch.Tensor | None = None,
        kv_include_self: bool = False,
        mask: torch.Tensor | None = None,
        residual: torch.Tensor | None = None,
    ):
        if context is None and not kv_include_self:
            # (b, n, 3 * h * d) -> 3 x (b, n, h * d): the last dim splits as (3, h, d) like vit-pytorch's chunk
            q, k, v = linear(self.norm(x), self.to_qkv).chunk(3, dim=-1)
        else:
            q, k, v = self._cross_qkv(self.norm(x), context, kv_include_self)
        q, k, v = (t.unflatten(-1, (self.heads, self.dim_head)) for t in (q, k, v))  # (b, tokens, h, d)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if q.is_nested:  # torch's jagged attention needs contiguous (b, tokens, h, d) inputs
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        p = self.attn_dropout if self.training else 0.0
        out, attn = attention(q, k, v, dropout_p=p, fused=self.fused, bias=mask, maps=return_attn)
        out = _project(out.transpose(1, 2).flatten(-2), self.to_out, self.dropout, residual)
        return (out, attn) if return_attn else out

    def _cross_qkv(self, x: torch.Tensor, context: torch.Tensor | None, kv_include_self: bool):
        """Queries from (normalised) ``x``, keys and values from ``context``: each ``(b, tokens, h * d)``."""
        if context is None:
            raise ValueError("kv_include_self=True needs a context (the tokens to attend to); received context=None")
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != x.shape[-1]:
            raise ValueError(
                f"context must be a tensor of shape (batch={x.shape[0]}, tokens, dim={x.shape[-1]}) like x; "
                f"received shape {tuple(context.shape)}"
            )
        if kv_include_self:
            context = torch.cat((x, context), dim=1)
        inner = self.heads * self.dim_head
        w = self.to_qkv.weight  # rows: [query; key; value] projections, no bias
        if not isinstance(w, torch.Tensor):  # a quantised layer: no weight to slice, project and split
            _, k, v = self.to_qkv(context).chunk(3, dim=-1)
            return self.to_qkv(x)[..., :inner], k, v
        k, v = F.linear(context, w[inner:]).chunk(2, dim=-1)
        return F.linear(x, w[:inner]), k, v


def _project(x: torch.Tensor, layer: nn.Module, dropout: nn.Dropout,
             residual: torch.Tensor | None) -> torch.Tensor:
    """``dropout(layer(x))``, plus ``residual`` if given: in one pass when the dropout is idle."""
    if residual is not None and not (dropout.training and dropout.p > 0):
        return linear(x, layer, residual=residual)
    out = dropout(linear(x, layer))
    return out if residual is None else residual + out


def _hooked(module: nn.Module) -> bool:
    """Whether calling ``module`` runs hooks, which must see its own output (no residual added)."""
    return forward_hooks_active(module)


class FeedForward(nn.Module):
    """Pre-norm MLP: ``fc2(gelu(fc1(norm(x))))`` with dropout after each linear layer's activation.
    ``forward(x, residual=r)`` returns ``r + mlp(x)`` (see :class:`Attention`)."""

    component = "mlp"

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        if type(self.act) is nn.GELU and self.act.approximate == "none" and not _hooked(self.act):
            h = linear(h, self.fc1, act="gelu")
        else:
            h = self.act(self.fc1(h))
        return _project(self.dropout(h), self.fc2, self.dropout, residual)


class Block(nn.Module):
    """One transformer layer: ``x + attn(x)``, then ``x + ff(x)``. ``mask`` goes to the attention."""

    def __init__(self, dim, heads, dim_head, mlp_dim, dropout=0.0, out_bias=True, qk_norm=False) -> None:
        super().__init__()
        self.attn = Attention(dim, heads, dim_head, dropout, out_bias=out_bias, qk_norm=qk_norm)
        self.ff = FeedForward(dim, mlp_dim, dropout)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        # the residual goes into the branch (one pass with its last layer) unless hooks watch the branch
        x = x + self.attn(x, mask=mask) if _hooked(self.attn) else self.attn(x, mask=mask, residual=x)
        return x + self.ff(x) if _hooked(self.ff) else self.ff(x, residual=x)


class Transformer(nn.Module):
    """``depth`` blocks followed by a final LayerNorm. ``mask`` goes to every block's attention."""

    def __init__(self, dim, depth, heads, dim_head, mlp_dim, dropout=0.0, out_bias=True, qk_norm=False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [Block(dim, heads, dim_head, mlp_dim, dropout, out_bias, qk_norm) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.norm(x)


def patchify(img: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """``(..., c, gh*ph, gw*pw) -> (..., gh*gw, ph*pw*c)``: patches in row-major order, each flattened
    in vit-pytorch's ``(p1 p2 c)`` order. The sides must be multiples of the patch size."""
    *lead, c, h, w = img.shape
    ph, pw = patch_size
    gh, gw = h // ph, w // pw
    x = img.reshape(*lead, c, gh, ph, gw, pw)
    n = len(lead)
    x = x.permute(*range(n), n + 1, n + 3, n + 2, n + 4, n)
    return x.reshape(*lead, gh * gw, ph * pw * c)


class PatchEmbedding(nn.Module):
    """Cut images into patches and project each to ``dim``: LayerNorm, Linear, LayerNorm.

    Checks its input: a batch of ``channels x image_size`` images, else ValueError.
    :meth:`project` embeds patches already cut (by :func:`patchify`), from images of any size.
    """

    component = "patch embedding"

    def __init__(self, image_size, patch_size, channels: int, dim: int, owner: str = "model") -> None:
        super().__init__()
        self.image_size = pair(image_size, "image_size")
        self.patch_size = pair(patch_size, "patch_size")
        (ih, iw), (ph, pw) = self.image_size, self.patch_size
        if ih % ph or iw % pw:
            raise ValueError(
                f"image_size {ih}x{iw} must be divisible by patch_size {ph}x{pw}; "
                f"received remainders {ih % ph} (height) and {iw % pw} (width)"
            )
        if channels < 1:
            raise ValueError(f"channels must be positive; received {channels}")
        self.channels = channels
        self.owner = owner
        self.grid = (ih // ph, iw // pw)
        self.num_patches = self.grid[0] * self.grid[1]
        patch_dim = channels * ph * pw
        self.norm_in = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)
        self.norm_out = nn.LayerNorm(dim)

    def patchify(self, img: torch.Tensor) -> torch.Tensor:
        """``(b, c, gh*ph, gw*pw) -> (b, gh*gw, ph*pw*c)``, patches in row-major order."""
        return patchify(img, self.patch_size)

    def project(self, patches: torch.Tensor) -> torch.Tensor:
        """Flattened patches ``(..., ph*pw*c)`` to tokens ``(..., dim)``."""
        return self.norm_out(linear(self.norm_in(patches), self.proj))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        check_images(img, self.channels, self.image_size, self.owner, self.norm_in.weight.dtype)
        return self.project(self.patchify(img))


def posemb_sincos_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine position table of shape ``(h * w, dim)``, rows in row-major order.

    A quarter of the channels each hold ``sin(x w)``, ``cos(x w)``, ``sin(y w)``, ``cos(y w)`` for
    ``dim / 4`` frequencies ``w`` spaced geometrically from 1 to ``1 / temperature``.
    """
    if dim % 4 or dim < 8:
        raise ValueError(f"sin-cos position embedding needs dim a multiple of 4 and at least 8; received {dim}")
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    omega = torch.arange(dim // 4) / (dim // 4 - 1)
    omega = 1.0 / (temperature**omega)
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).float()


class SinCosPosEmb2d(nn.Module):
    """Adds a fixed :func:`posemb_sincos_2d` table, held as a (non-persistent) buffer.

    A buffer moves with ``.to(device)`` and never receives gradients; non-persistent keeps it out
    of checkpoints, since it is a function of the grid and ``dim`` alone.
    """

    component = "positions + tokens"

    def __init__(self, grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> None:
        super().__init__()
        self.register_buffer("pe", posemb_sincos_2d(grid[0], grid[1], dim, temperature), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe.to(x.dtype)

