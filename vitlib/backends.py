"""Which kernels vitlib's layers run: the attention backend, chosen for a block of code, and the
CPU matrix products of the linear layers.

Attention. Every model in vitlib computes its attention through :func:`vitlib.layers.attention`,
so one switch covers them all::

    with attention_backend("plain"):      # softmax(q k^T / sqrt(d)) v, the matrix built in full
        model(x)
    with attention_backend("flash"):      # SDPA restricted to the FlashAttention kernel
        model(x)

The names (:data:`ATTENTION_BACKENDS`):

* ``"plain"``: the textbook computation, which can return the attention maps (and builds the
  ``queries x keys`` matrix to do so);
* ``"sdpa"``: :func:`torch.nn.functional.scaled_dot_product_attention`, torch choosing the kernel;
* ``"flash"``, ``"efficient"``, ``"math"``, ``"cudnn"``: SDPA restricted with
  :func:`torch.nn.attention.sdpa_kernel` to FlashAttention, the memory-efficient kernel, torch's
  reference math kernel or cuDNN's (``"cudnn"`` only where this torch has it).

The choice is scoped: it holds inside the ``with`` block, nests, and the block restores what held
before, also on an exception. It lives in a :class:`contextvars.ContextVar`, so it belongs to the
thread (or asyncio task) that made it; a new thread starts with none. Outside any block
(``current_attention_backend() is None``) each attention module follows its own ``fused`` flag
(SDPA by default); inside a block the block wins over those flags. Asking for the attention maps
(``Attention.forward(x, return_attn=True)``, :class:`vitlib.layers.record_attention` with
``maps=True``, ``model.attention_maps``) always takes the plain path, whatever the block says,
since no fused kernel returns them.

A kernel that cannot run the inputs on their device (the memory-efficient and cuDNN kernels on
a CPU; FlashAttention on a GPU in float32, or with a mask or bias; ...) raises a RuntimeError that
names the backend, the device and the dtype, when the attention is called: whether a kernel runs
depends on the inputs, not only on the device. :func:`available_attention_backends` lists what
runs on a device and dtype beforehand (``"flash"`` runs on CPUs too: torch has a CPU kernel of
it). The fused kernels get queries, keys and values whose channels are contiguous, copied if
need be (LeViT's, transposed from its feature maps, are not). torch's flags behind ``sdpa_kernel`` are process-wide and
set only around each call; threads that pick different explicit kernels at the same moment can
see each other's.

Linear layers on the CPU. torch's float32 matrix products on the CPU call MKL, which on some
CPUs (AMD's, notably) runs far below the speed of oneDNN's, also bundled with torch. In inference
(no gradient wanted), in float32, :func:`linear` runs vitlib's big linear layers through oneDNN
(``torch.ops.mkldnn._linear_pointwise``), with the bias and a following GELU or residual sum in the
same pass; everything else (training, autocast, tracing, compiling, export, FLOP counting,
quantised or hooked layers, small products) takes ``nn.Linear`` as it is. ``onednn_linear(False)``
turns the path off for a block of code; ``VITLIB_ONEDNN=0`` turns it off for the process.

Reduced precision on a GPU. :func:`half_precision` is the one rule for which 16-bit type
automatic mixed precision uses: bfloat16 only where the GPU computes it natively (compute
capability 8.0 and later: A100, H100, RTX 30xx and newer), float16 with a gradient scaler elsewhere.
``torch.cuda.is_bf16_supported()`` is True on a T4 (7.5) too, through emulation: bfloat16 there runs
at a small fraction of float16's tensor-core speed, and cuDNN has no bfloat16 convolutions.
:func:`autocast` enters mixed precision to a given type (or none), and :func:`synchronise` waits for
a GPU's queued work: the one place for each, which timing and training share.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import compat

__all__ = ["ATTENTION_BACKENDS", "SDPA_KERNELS", "attention_backend", "current_attention_backend",
           "available_attention_backends", "sdpa", "ONEDNN_MIN_MACS", "onednn_linear", "linear",
           "BF16_MIN_CAPABILITY", "half_precision", "autocast", "synchronise"]

_KERNEL_NAMES = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH",
                 "cudnn": "CUDNN_ATTENTION"}
#: SDPA's kernels by vitlib's name, those this torch has.
SDPA_KERNELS: dict[str, SDPBackend] = {
    name: getattr(SDPBackend, member) for name, member in _KERNEL_NAMES.items()
    if hasattr(SDPBackend, member)}

#: What :func:`attention_backend` accepts (besides None: each module's own ``fused`` flag).
ATTENTION_BACKENDS: tuple[str, ...] = ("plain", "sdpa", *SDPA_KERNELS)

_BACKEND: contextvars.ContextVar[str | None] = contextvars.ContextVar("vitlib_attention_backend",
                                                                      default=None)


def _check_backend(name: str | None) -> str | None:
    if name is None or name in ATTENTION_BACKENDS:
        return name
    if name in _KERNEL_NAMES:
        raise ValueError(f"attention backend {name!r} is not in this torch ({torch.__version__}); choose one "
                         f"of {ATTENTION_BACKENDS}, or None for each module's own setting")
    raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, or None for each module's own "
                     f"setting; received {name!r}")


class attention_backend:
    """``with attention_backend(name): ...`` runs every attention inside the block on ``name``,
    one of :data:`ATTENTION_BACKENDS` (None: each module's own ``fused`` flag), and restores the
    previous choice on leaving. A bad name raises ValueError at once, naming the choices. Usable
    as a decorator too. See :mod:`vitlib.backends`."""

    def __init__(self, name: str | None) -> None:
        self.name = _check_backend(name)
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> str | None:
        self._tokens.append(_BACKEND.set(self.name))
        return self.name

    def __exit__(self, *exc) -> None:
        _BACKEND.reset(self._tokens.pop())

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with attention_backend(self.name):
                return fn(*args, **kwargs)
        return wrapped

    def __repr__(self) -> str:
        return f"attention_backend({self.name!r})"


def current_attention_backend() -> str | None:
    """The backend chosen by the innermost :class:`attention_backend` block, or None outside any."""
    return _BACKEND.get()


def _no_kernel(err: RuntimeError) -> bool:
    text = str(err)
    return "No available kernel" in text or "No viable backend" in text


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
         dropout_p: float = 0.0, backend: str | None = None) -> torch.Tensor:
    """:func:`torch.nn.functional.scaled_dot_product_attention` on ``backend``: None or ``"sdpa"``
    lets torch choose, a kernel's name (``"flash"``, ...) restricts SDPA to it (the fused kernels get
    ``q``, ``k``, ``v`` with contiguous channels, copied if need be). A kernel that cannot run these
    inputs raises a RuntimeError naming it, the device and the dtype."""
    if mask is not None and mask.ndim < q.ndim:  # (heads, q, k) -> (1, heads, q, k): the shape kernels take
        mask = mask.reshape((1,) * (q.ndim - mask.ndim) + tuple(mask.shape))
    kernel = SDPA_KERNELS.get(backend)
    if kernel is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if backend != "math" and not q.is_nested and any(t.stride(-1) != 1 for t in (q, k, v)):
        # the fused kernels read rows of contiguous channels (LeViT's transposed maps have none)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if torch.compiler.is_compiling():  # the graph holds the kernel choice; errors surface at compile time
        with sdpa_kernel(kernel):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    try:
        with sdpa_kernel(kernel):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    except RuntimeError as err:
        if not _no_kernel(err):
            raise
        what = "" if mask is None else f", a {'boolean mask' if mask.dtype == torch.bool else 'float bias'}"
        raise RuntimeError(
            f"attention backend {backend!r} cannot run these inputs on {q.device.type} (queries of shape "
            f"{tuple(q.shape)} in {q.dtype}{what}{', dropout' if dropout_p else ''}): torch's SDPA has no "
            f"such kernel for them (torch warns why, where it says). available_attention_backends"
            f"({q.device.type!r}, {q.dtype}) lists the backends that run there; 'sdpa' lets torch choose"
        ) from err


def available_attention_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                                 dim_head: int = 64) -> tuple[str, ...]:
    """The backends that run self-attention (no mask, no dropout, heads of ``dim_head``) on
    ``device`` in ``dtype``, found by trying each on a small input. ``"plain"`` and ``"sdpa"``
    always run; a kernel may still refuse other inputs (a mask, another head size)."""
    q = torch.randn(1, 2, 16, dim_head, generator=torch.Generator().manual_seed(0)).to(device, dtype)  # own RNG
    found = ["plain", "sdpa"]
    for name, kernel in SDPA_KERNELS.items():
        try:
            with warnings.catch_warnings(), sdpa_kernel(kernel):
                warnings.simplefilter("ignore")
                F.scaled_dot_product_attention(q, q, q)
        except RuntimeError:
            from . import smoke

            if smoke.active() and torch.device(device).type != "cuda":
                smoke.skipped(f"the {name} attention kernel", f"does not run on {torch.device(device).type} in {dtype}")
            continue
        found.append(name)
    return tuple(found)


# ----- linear layers through oneDNN on the CPU -------------------------------------------------------

_ONEDNN: contextvars.ContextVar[bool] = contextvars.ContextVar("vitlib_onednn_linear", default=True)
_ONEDNN_ENV = os.environ.get("VITLIB_ONEDNN", "1").strip().lower() not in ("0", "false", "no", "off")
#: Below this many multiply-adds a product stays with nn.Linear: oneDNN's call has a fixed cost of
#: about 20 us, which outweighs its speed below about half a million (measured on one core).
ONEDNN_MIN_MACS = 2**20


class onednn_linear:
    """``with onednn_linear(False): ...`` keeps every linear layer on ``nn.Linear`` inside the block
    (``True`` allows the oneDNN path again); restores the previous setting on leaving."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = bool(enabled)
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> bool:
        self._tokens.append(_ONEDNN.set(self.enabled))
        return self.enabled

    def __exit__(self, *exc) -> None:
        _ONEDNN.reset(self._tokens.pop())


def _use_onednn(x: torch.Tensor, layer: nn.Module) -> bool:
    if torch.compiler.is_compiling() or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False  # compilers, export and tracing see nn.Linear as it is
    if not (_ONEDNN_ENV and _ONEDNN.get()) or type(layer) is not nn.Linear or type(x) is not torch.Tensor:
        return False
    w, b = layer.weight, layer.bias
    if (x.device.type != "cpu" or x.dtype != torch.float32 or w.dtype != torch.float32 or x.is_nested
            or x.numel() * w.shape[0] < ONEDNN_MIN_MACS):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or b is not None and b.requires_grad):
        return False
    if torch.is_autocast_enabled("cpu") or compat.forward_hooks_active(layer) or compat.operators_watched(x):
        return False
    return compat.onednn_linear_works()


def linear(x: torch.Tensor, layer: nn.Module, act: str | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """``layer(x)``, then ``gelu`` if ``act == "gelu"``, then ``+ residual`` if given, through oneDNN in
    one pass where that path applies (see :mod:`vitlib.backends`), else through ``layer`` itself.
    ``act`` and ``residual`` do not combine."""
    if act not in (None, "gelu") or (act is not None and residual is not None):
        raise ValueError(f"act must be None or 'gelu', and not combine with a residual; received act={act!r}")
    if _use_onednn(x, layer) and (residual is None or residual.shape == x.shape[:-1] + (layer.out_features,)
                                  and residual.dtype == x.dtype and type(residual) is torch.Tensor):
        op = compat.onednn_linear_op()
        if residual is not None:
            return op.binary(x, residual, layer.weight, layer.bias, "add")
        return op(x, layer.weight, layer.bias, "gelu", [], "none") if act else op(x, layer.weight, layer.bias,
                                                                                   "none", [], "")
    y = layer(x)
    if act:
        y = F.gelu(y)
    return y if residual is None else residual + y


# ---------------------------------------------------------------------------------------------
# reduced precision

#: The first CUDA compute capability whose tensor cores compute bfloat16 (Ampere).
BF16_MIN_CAPABILITY = (8, 0)


def half_precision(device: torch.device | str) -> torch.dtype:
    """The 16-bit type automatic mixed precision should use on ``device``: bfloat16 on GPUs of
    compute capability 8.0 or later, float16 on older GPUs (a T4: 7.5), and bfloat16 on a CPU
    (where float16 autocast covers fewer operators)."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.bfloat16
    capability = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if tuple(capability) >= BF16_MIN_CAPABILITY else torch.float16


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or no context when ``dtype`` is None
    (float32 throughout). The type to ask for on a GPU: :func:`half_precision`."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def synchronise(device: torch.device | str | None) -> None:
    """Wait until the work queued on ``device`` has run, when it is a GPU (a CPU's work has run when
    the call returns; None: nothing to wait for): before a clock is read or memory is counted."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
