"""Every use vitlib makes of torch's private APIs, and of MKL, in one place: each with a probe (does
this torch have it, and does it work), a fallback where it does not, and a test
(``tests/test_compat.py``) that it works on the torch installed.

Each entry, the private API it uses, and its fallback:

* :func:`disable_dynamo`: ``torch._disable_dynamo``; else ``torch.compiler.disable``;
* :func:`onednn_linear_works`, :func:`onednn_linear_op`: ``torch.ops.mkldnn._linear_pointwise``;
  else the caller keeps ``nn.Linear``;
* :func:`operators_watched`: ``torch.utils._python_dispatch``; else "watched" (``nn.Linear`` again);
* :func:`forward_hooks_active`: ``Module._forward_hooks`` and the global hooks; else "hooked";
* :func:`cpu_flash_attention_ops`: ``aten._scaled_dot_product_flash_attention_for_cpu``; else None
  (a FLOP counter cannot count it);
* :func:`per_tensor_quantized`: ``torch._make_per_tensor_quantized_tensor``; else
  ``torch.quantize_per_tensor`` of the dequantised values;
* :func:`profiler_memory_events`: ``profile.profiler.kineto_results``; else None, warned once;
* :func:`apply_conversion`: ``nn.Module._apply``; else a warning, once (see below);
* :func:`ddp_first_bucket_bytes`: ``torch.distributed._DEFAULT_FIRST_BUCKET_BYTES``; else 1 MiB;
* :func:`mkl_threading`, :func:`set_mkl_threading`, :func:`mkl_threading_kept`: MKL's C API through
  ctypes; else None, warned once (logged, where torch has no MKL at all).

Probes run on first use, never at import, and their answers are cached for the process.

Why :func:`apply_conversion` keeps the private ``nn.Module._apply``: a module held outside its owner's submodules (the
frozen teacher of :class:`vitlib.distill.DistillationLoss`, which must be in no ``parameters()``,
``state_dict()``, optimiser or DDP bucket) follows its owner's ``.to()``, ``.cuda()``, ``.double()``,
``.half()``, ``to_empty()``... only if the owner overrides ``nn.Module._apply``, the one method all of
them go through; torch has no public hook for conversions. The alternatives are worse: registering
the teacher puts its weights everywhere the submodules' go, and overriding each public method
misses any torch adds. So the owner overrides ``_apply`` and calls :func:`apply_conversion`;
:func:`conversions_reach_apply` checks that ``.to()`` still reaches ``_apply``.

MKL. ``torch.set_num_threads`` (and so every :class:`torch.utils.benchmark.Timer`) gives MKL a fixed
thread count and turns its dynamic threading off, for the rest of the process; MKL then runs even
the tiny matrix products of a quick-mode model on every thread. :func:`mkl_threading_kept` reads
MKL's state before a block (its dynamic flag, and the calling thread's own count, which
``MKL_Set_Num_Threads_Local`` returns when set) and puts it back afterwards. The functions come from
torch's own CPU library, which links MKL in statically and exports its C entries
(``libtorch_cpu.so``, ``libtorch_cpu.dylib``, ``torch_cpu.dll``), else from an ``mkl_rt`` this
process has already loaded. Only MKL's C names are called (``MKL_Set_Dynamic``: an int); the
lower-case ``mkl_set_dynamic`` there is MKL's Fortran entry, which takes a pointer and crashes on an
int. The flag is read with ``MKL_Get_Dynamic``, or where the library does not export it (torch's
does not) with ``mkl_serv_get_dynamic``, MKL's service function that ``MKL_Get_Dynamic`` returns.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["disable_dynamo", "onednn_linear_works", "onednn_linear_op", "operators_watched",
           "forward_hooks_active", "cpu_flash_attention_ops", "per_tensor_quantized",
           "profiler_memory_events", "conversions_reach_apply", "apply_conversion", "ddp_first_bucket_bytes",
           "MklThreading", "mkl_threading", "set_mkl_threading", "mkl_threading_kept", "probes"]

_log = logging.getLogger(__name__)
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


# ----- compiling -------------------------------------------------------------------------------

#: ``torch.compiler.disable`` as a decorator that imports the compiler on the decorated function's
#: first call, not when it decorates (``torch._disable_dynamo``); the public form where this torch
#: lacks the lazy one.
disable_dynamo: Callable = getattr(torch, "_disable_dynamo", None) or torch.compiler.disable


# ----- oneDNN's linear layer -------------------------------------------------------------------


def _check_onednn_linear(op) -> bool:
    """Whether ``op`` (``mkldnn::_linear_pointwise``) agrees with ``F.linear``: plain, with a GELU,
    and with a residual sum (``op.binary``)."""
    g = torch.Generator().manual_seed(0)  # its own: a probe must not move the caller's random stream
    try:
        x, w, b, r = (torch.randn(*shape, generator=g) for shape in ((3, 5, 8), (6, 8), (6,), (3, 5, 6)))
        with torch.no_grad():
            y = F.linear(x, w, b)
            return bool(torch.allclose(op(x, w, b, "none", [], ""), y, atol=1e-5, rtol=1e-4)
                        and torch.allclose(op(x, w, b, "gelu", [], "none"), F.gelu(y), atol=1e-5, rtol=1e-4)
                        and torch.allclose(op.binary(x, r, w, b, "add"), r + y, atol=1e-5, rtol=1e-4))
    except (AttributeError, RuntimeError, TypeError, NotImplementedError):
        return False


@functools.cache
def onednn_linear_works() -> bool:
    """Whether this torch has oneDNN's fused linear layer (``torch.ops.mkldnn._linear_pointwise``)
    and it agrees with ``F.linear``. Where it does not, callers keep ``nn.Linear``."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    return op is not None and _check_onednn_linear(op)


def onednn_linear_op():
    """``torch.ops.mkldnn._linear_pointwise``, looked up on each call (so that a test may wrap it):
    ``op(x, weight, bias, "none" | "gelu", [], "" | "none")`` and ``op.binary(x, other, weight,
    bias, "add")``. Call it only where :func:`onednn_linear_works`."""
    return torch.ops.mkldnn._linear_pointwise


# ----- who watches the operators ---------------------------------------------------------------


@functools.cache
def _current_dispatch_mode() -> Callable[[], object] | None:
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:
        return None
    return _get_current_dispatch_mode


def operators_watched(x: torch.Tensor) -> bool:
    """Whether something intercepts the operators that run on ``x``: a ``__torch_function__`` mode
    (``torch.device`` as a context, tracing modes; public ``torch.overrides.has_torch_function``) or a
    Python dispatch mode (FLOP counting, fake tensors; ``torch.utils._python_dispatch``). A kernel
    call that only some paths make must be left to them. True, to be safe, where this torch cannot
    tell."""
    if torch.overrides.has_torch_function((x,)):
        return True
    current = _current_dispatch_mode()
    return True if current is None else current() is not None


_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks")


def forward_hooks_active(module: nn.Module) -> bool:
    """Whether calling ``module`` runs forward hooks, its own or global ones (torch keeps both in
    private dictionaries; there is no public query). True, to be safe, where this torch keeps them
    elsewhere: a caller then takes the path hooks expect."""
    try:
        glob = [getattr(nn.modules.module, name) for name in _GLOBAL_HOOKS]
        return bool(module._forward_hooks or module._forward_pre_hooks or any(glob))
    except AttributeError:
        return True


@functools.cache
def cpu_flash_attention_ops() -> tuple:
    """``(forward, backward)``: the aten operators that ``F.scaled_dot_product_attention`` runs on a
    CPU (``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward), each None where this
    torch lacks it (a FLOP counter then cannot count them)."""
    ops = torch.ops.aten
    names = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention_for_cpu_backward")
    return tuple(getattr(ops, name) if hasattr(ops, name) else None for name in names)


# ----- quantised tensors -----------------------------------------------------------------------

_QDTYPES = {torch.int8: torch.qint8, torch.uint8: torch.quint8}


def per_tensor_quantized(int_repr: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """The per-tensor quantised tensor whose integers are ``int_repr`` (int8: qint8, uint8: quint8),
    with ``scale`` and ``zero_point``: what ``q.int_repr()``, ``q.q_scale()``, ``q.q_zero_point()``
    return. torch's private builder takes the integers as they are; where it is missing they are
    dequantised and quantised again (``torch.quantize_per_tensor``), which gives the same integers."""
    make = getattr(torch, "_make_per_tensor_quantized_tensor", None)
    if make is not None:
        return make(int_repr, float(scale), int(zero_point))
    return _quantized_public(int_repr, scale, zero_point)


def _quantized_public(int_repr: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    if int_repr.dtype not in _QDTYPES:
        raise ValueError(f"int_repr must be int8 or uint8 to build a quantised tensor without "
                         f"torch._make_per_tensor_quantized_tensor; received {int_repr.dtype}")
    values = (int_repr.to(torch.float32) - int(zero_point)) * float(scale)
    return torch.quantize_per_tensor(values, float(scale), int(zero_point), _QDTYPES[int_repr.dtype])


# ----- the profiler's memory records -----------------------------------------------------------


def profiler_memory_events(prof) -> list[tuple[int, int]] | None:
    """``(start in ns, bytes)`` of each CPU allocation (bytes > 0) and release (< 0) that ``prof``, a
    finished ``torch.profiler.profile(profile_memory=True)``, recorded, in time order. They come
    from the profiler's raw results (``prof.profiler.kineto_results``): its public tables report
    memory per operator, not the order of allocations, which a peak needs. None, with a warning
    once, where this torch's profiler does not expose them."""
    try:
        events = prof.profiler.kineto_results.events()
        return sorted((e.start_ns(), e.nbytes()) for e in events
                      if e.name() == "[memory]" and e.device_type().name == "CPU")
    except AttributeError as err:
        _warn_once("profiler", f"this torch's profiler does not expose its memory records ({err}); "
                               "CPU peak memory cannot be measured")
        return None


# ----- modules held outside their owner ---------------------------------------------------------


@functools.cache
def conversions_reach_apply() -> bool:
    """Whether ``.to()`` reaches ``nn.Module._apply`` (see the module docstring), tried on a module."""
    calls = []

    class Probe(nn.Module):
        def _apply(self, fn, *args, **kwargs):
            calls.append(fn)
            return super()._apply(fn, *args, **kwargs)

    try:
        Probe().to(torch.float64)
    except (AttributeError, TypeError):
        return False
    return bool(calls)


def apply_conversion(module: nn.Module, fn: Callable, *args, **kwargs) -> nn.Module:
    """Apply to ``module`` the conversion ``fn`` that its owner's ``_apply(fn, ...)`` received: the one
    way a module that is not a submodule follows its owner's ``.to()`` (see the module docstring).
    Where this torch's conversions no longer go through ``_apply``, warns once that the module must be
    moved by hand."""
    if not conversions_reach_apply():
        _warn_once("apply", "this torch's nn.Module conversions do not go through _apply: a module held "
                            "outside its owner (a distillation teacher) must be moved with its own .to()")
    return module._apply(fn, *args, **kwargs)


def ddp_first_bucket_bytes() -> int:
    """The size of DDP's first gradient bucket (``torch.distributed._DEFAULT_FIRST_BUCKET_BYTES``),
    or 1 MiB, the size DDP has always used, where this torch does not say."""
    dist = getattr(torch, "distributed", None)
    return int(getattr(dist, "_DEFAULT_FIRST_BUCKET_BYTES", 2**20))


# ----- MKL's threading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MklThreading:
    """MKL's threading: ``dynamic``, whether MKL picks how many threads each call uses, and
    ``local_threads``, the calling thread's own count (0: none; MKL's global count applies)."""

    dynamic: bool
    local_threads: int


class _MklFunctions(NamedTuple):
    get_dynamic: Callable[[], int]
    set_dynamic: Callable[[int], None]
    set_local: Callable[[int], int]  # returns the previous local count
    library: str


_DYNAMIC_GETTERS = ("MKL_Get_Dynamic", "mkl_serv_get_dynamic")


def _mkl_candidates() -> list[tuple[str, int]]:
    """``(library, dlopen mode)`` to try: torch's CPU library, then an MKL runtime already loaded
    (``RTLD_NOLOAD``: not a second MKL, whose state torch would not see; Windows cannot ask)."""
    torch_lib, mkl_rt = {"darwin": ("libtorch_cpu.dylib", ("libmkl_rt.2.dylib", "libmkl_rt.dylib")),
                         "win32": ("torch_cpu.dll", ("mkl_rt.2.dll", "mkl_rt.dll"))}.get(
        sys.platform, ("libtorch_cpu.so", ("libmkl_rt.so.2", "libmkl_rt.so")))
    mode = ctypes.DEFAULT_MODE
    return [(os.path.join(os.path.dirname(torch.__file__), "lib", torch_lib), mode),
            *((name, mode | getattr(os, "RTLD_NOLOAD", 0)) for name in mkl_rt)]


@functools.cache
def _mkl() -> _MklFunctions | None:
    """MKL's threading functions (C names only), or None: where torch has no MKL (logged once),
    or its functions cannot be found (warned once)."""
    if not torch.backends.mkl.is_available():
        _log.info("this torch has no MKL: there is no MKL threading to keep")
        return None
    for name, mode in _mkl_candidates():
        try:
            lib = ctypes.CDLL(name, mode=mode)
            getter = next(getattr(lib, g) for g in _DYNAMIC_GETTERS if hasattr(lib, g))
            set_dynamic, set_local = lib.MKL_Set_Dynamic, lib.MKL_Set_Num_Threads_Local
        except (OSError, AttributeError, StopIteration):
            continue
        getter.argtypes, getter.restype = [], ctypes.c_int
        set_dynamic.argtypes, set_dynamic.restype = [ctypes.c_int], None
        set_local.argtypes, set_local.restype = [ctypes.c_int], ctypes.c_int
        return _MklFunctions(getter, set_dynamic, set_local, name)
    warnings.warn("torch has MKL but its threading functions were not found (tried "
                  f"{', '.join(n for n, _ in _mkl_candidates())}): a timing leaves MKL's threading as "
                  "torch.set_num_threads sets it (dynamic threading off)", RuntimeWarning, stacklevel=3)
    return None


def mkl_threading() -> MklThreading | None:
    """MKL's threading now, for the calling thread; None where MKL cannot be reached."""
    mkl = _mkl()
    if mkl is None:
        return None
    local = mkl.set_local(0)  # the only way to read it: set, and put back
    mkl.set_local(local)
    return MklThreading(dynamic=bool(mkl.get_dynamic()), local_threads=local)


def set_mkl_threading(state: MklThreading | None) -> None:
    """Give MKL the threading ``state`` (from :func:`mkl_threading`); nothing where ``state`` or MKL is
    None."""
    mkl = _mkl()
    if mkl is not None and state is not None:
        mkl.set_dynamic(int(state.dynamic))
        mkl.set_local(int(state.local_threads))


@contextlib.contextmanager
def mkl_threading_kept() -> Iterator[MklThreading | None]:
    """MKL's threading as it was before the block, back after it (also on an exception): whatever
    ``torch.set_num_threads`` did inside. Yields the state kept."""
    state = mkl_threading()
    try:
        yield state
    finally:
        set_mkl_threading(state)


# ----- all at once ---------------------------------------------------------------------------------


def probes() -> dict[str, bool]:
    """Which private features this torch has, by name (the fallbacks serve the others)."""
    forward, backward = cpu_flash_attention_ops()
    return {"lazy disable_dynamo": disable_dynamo is not torch.compiler.disable,
            "onednn linear": onednn_linear_works(),
            "dispatch mode query": _current_dispatch_mode() is not None,
            "forward hooks query": all(hasattr(nn.modules.module, n) for n in _GLOBAL_HOOKS),
            "cpu flash attention ops": forward is not None and backward is not None,
            "quantised tensor builder": hasattr(torch, "_make_per_tensor_quantized_tensor"),
            "conversions reach _apply": conversions_reach_apply(),
            "ddp first bucket size": hasattr(getattr(torch, "distributed", None), "_DEFAULT_FIRST_BUCKET_BYTES"),
            "mkl threading": _mkl() is not None}
