"""Dynamic INT8 quantisation of a model's matrix products, and INT8 files that rebuild their model.

:func:`prepare_int8` and :func:`quantize_int8` take the ``torch.ao`` path: every ``nn.Linear``
becomes a dynamically quantised one (weights stored as INT8 with one scale per tensor, activations
quantised per call, products in INT8 with INT32 accumulation, outputs back in float32).
``torch.ao.quantization`` still works in torch 2.14 but warns that it is deprecated in favour of
torchao; :func:`vitlib.export.to_int8` records that warning in its notes rather than printing it.
torchao's own INT8 path is not what this module runs: whether it is faster depends on the CPU's
instructions, so time it against this one (:func:`vitlib.export.measure`) before switching.

A model whose compute sits in convolutions gains little from that: vit-pytorch's LeViT has only
its head quantised. With ``convs=True`` (the default) each BatchNorm is first folded into the layer
before it (:func:`vitlib.fuse.fuse_batchnorm`) and every 1x1 convolution is rewritten as the
linear layer it is (:class:`Pointwise`: channels last, a ``Linear``, channels first again; stride
``s`` keeps every ``s``-th row and column first), so LeViT's projections and MLPs, most of its
FLOPs, run in INT8 too. Its 3x3 stem and the attention products stay in float32.

:func:`save_int8` writes the INT8 weights and their scales (and every other tensor) to a
safetensors file with the model's class and configuration as metadata; :func:`load_int8`
rebuilds the model's structure (on the meta device, so that no float weights are made only to be
discarded), prepares it the same way and loads them. Nothing is unpickled.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..compat import per_tensor_quantized
from ..fuse import fuse_batchnorm
from ..models.state import module_modes, restore_modes

__all__ = ["INT8_FORMAT", "Pointwise", "prepare_int8", "quantize_int8", "quantized_layers", "int8_flop_share",
           "save_int8", "load_int8"]

INT8_FORMAT = "vitlib-int8-1"


class Pointwise(nn.Module):
    """A 1x1 convolution (no padding, one group) computed as a ``Linear`` over the channels of
    ``(b, c, h, w)`` maps, so that dynamic quantisation, which takes linear layers, reaches it."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not _pointwise(conv):
            raise ValueError(f"Pointwise rewrites a 1x1 convolution without padding, dilation or groups; "
                             f"received {conv}")
        self.stride = conv.stride
        self.linear = nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None,
                                device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(conv.weight.flatten(1))
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sy, sx = self.stride
        if (sy, sx) != (1, 1):
            x = x[..., ::sy, ::sx]
        return self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


def _pointwise(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.padding in ((0, 0), "valid")
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


def prepare_int8(model: nn.Module, convs: bool = True) -> nn.Module:
    """A float copy of ``model`` (eval mode) ready for :func:`quantize_int8`: with ``convs``, every
    BatchNorm that follows a layer folded into it and every 1x1 convolution rewritten as
    :class:`Pointwise`; without, a plain copy. The copy's ``int8_convs`` says which (the INT8 file
    records it, so that :func:`load_int8` prepares the same structure)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"prepare_int8 expects an nn.Module; received {type(model).__name__}")
    import copy

    modes = module_modes(model)
    model.eval()
    try:
        out = fuse_batchnorm(model) if convs else copy.deepcopy(model).eval()
    finally:
        restore_modes(modes)  # each module's own, a submodule the caller left in eval mode included
    if convs:
        for module in list(out.modules()):
            for name, child in list(module.named_children()):
                if _pointwise(child):
                    setattr(module, name, Pointwise(child))
    out.int8_convs = bool(convs)
    return out


def quantize_int8(prepared: nn.Module) -> nn.Module:
    """``torch.ao.quantization.quantize_dynamic`` of every ``nn.Linear`` of ``prepared`` to INT8
    (a new module; CPU only)."""
    if any(p.device.type != "cpu" for p in prepared.parameters()):
        raise ValueError("dynamic INT8 quantisation runs on the CPU; received a model on "
                         f"{next(prepared.parameters()).device}")
    return torch.ao.quantization.quantize_dynamic(prepared, {nn.Linear}, dtype=torch.qint8)


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The dynamically quantised linear layers of ``model`` by qualified name."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    return {name: m for name, m in model.named_modules() if isinstance(m, QLinear)}


def int8_flop_share(prepared: nn.Module, x) -> float:
    """The share of ``prepared``'s matrix-product FLOPs (:func:`vitlib.bench.count_flops`) that its
    ``nn.Linear`` layers compute, which quantisation turns into INT8, for one forward pass on ``x``."""
    from ..bench import count_flops

    linear = [0]

    def hook(module: nn.Linear, args, output) -> None:
        rows = args[0].numel() // module.in_features
        linear[0] += 2 * rows * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in prepared.modules() if type(m) is nn.Linear]
    try:
        total = count_flops(prepared, x)
    finally:
        for h in handles:
            h.remove()
    return linear[0] / total if total else 0.0


def save_int8(path: str | Path, quantized: nn.Module) -> Path:
    """Write ``quantized`` (:func:`quantize_int8` of :func:`prepare_int8` of a vitlib model) to a
    safetensors file: each quantised layer's INT8 weight, scale, zero point and bias, every other
    parameter and buffer, and as metadata the model's class and configuration and how it was
    prepared (``int8_convs``), which the quantised copy keeps."""
    from safetensors.torch import save_file

    from ..train.checkpoint import _config_json

    config, convs = getattr(quantized, "config", None), getattr(quantized, "int8_convs", None)
    if config is None or convs is None:
        raise ValueError("save_int8 needs a vitlib model prepared by prepare_int8 and quantised (with a "
                         f".config and .int8_convs); received a {type(quantized).__name__}")
    layers = quantized_layers(quantized)
    tensors = {}
    for name, layer in layers.items():
        w = layer.weight()
        if w.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise ValueError(f"save_int8 stores one scale per weight; {name} has {w.qscheme()}")
        tensors[f"{name}.weight_int8"] = w.int_repr()
        tensors[f"{name}.weight_scale"] = torch.tensor([w.q_scale()], dtype=torch.float64)
        tensors[f"{name}.weight_zero_point"] = torch.tensor([w.q_zero_point()], dtype=torch.int64)
        if layer.bias() is not None:
            tensors[f"{name}.bias"] = layer.bias().detach()
    for name, t in _float_tensors(quantized, layers).items():
        tensors[name] = t
    meta = {"format": INT8_FORMAT, "model_class": type(quantized).__name__,
            "model_config": _config_json(quantized, config), "convs": json.dumps(bool(convs))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    return path


def _float_tensors(model: nn.Module, layers: dict) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (non-persistent ones too) outside the quantised layers."""
    out = {}
    for kind in (model.named_parameters(), model.named_buffers()):
        for name, t in kind:
            if not any(name.startswith(f"{layer}.") for layer in layers):
                out[name] = t
    return out


def load_int8(path: str | Path) -> nn.Module:
    """Rebuild the model saved by :func:`save_int8`: its class and configuration, prepared the
    same way, with the saved INT8 layers and tensors loaded (eval mode, CPU)."""
    from safetensors import SafetensorError, safe_open

    from ..models import MODELS, NaViTNested

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no INT8 model at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != INT8_FORMAT:
                raise ValueError(f"{path} is not a vitlib INT8 model (format {meta.get('format')!r}, "
                                 f"expected {INT8_FORMAT!r})")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from err
    classes = {cls.__name__: cls for cls in (*MODELS.values(), NaViTNested)}
    if meta.get("model_class") not in classes:
        raise ValueError(f"{path} holds a {meta.get('model_class')!r}; vitlib knows {sorted(classes)}")
    with torch.device("meta"):  # shapes only: no float weights are made, only to be thrown away
        model = classes[meta["model_class"]](**json.loads(meta["model_config"]))
    quantized = _empty_int8(prepare_int8(model.eval(), json.loads(meta["convs"])))
    layers = quantized_layers(quantized)
    for name, layer in layers.items():
        w = per_tensor_quantized(tensors.pop(f"{name}.weight_int8"), float(tensors.pop(f"{name}.weight_scale")),
                                 int(tensors.pop(f"{name}.weight_zero_point")))
        layer.set_weight_bias(w, tensors.pop(f"{name}.bias", None))
    expected = _float_tensors(quantized, layers)
    if set(expected) != set(tensors):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ValueError(f"{path} does not fit a {meta['model_class']} built with {meta['model_config']}: "
                         f"missing {missing[:5]}, unexpected {extra[:5]}")
    with torch.no_grad():
        for name, t in expected.items():
            t.copy_(tensors[name])
    return quantized.eval()


def _empty_int8(prepared: nn.Module) -> nn.Module:
    """``prepared`` (on the meta device) with an empty dynamically quantised layer in place of each
    ``nn.Linear``, as :func:`quantize_int8` would place them, and every other tensor allocated on
    the CPU, uninitialised: the structure :func:`load_int8` fills."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    for module in list(prepared.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                empty = QLinear(child.in_features, child.out_features, bias_=child.bias is not None,
                                dtype=torch.qint8)
                setattr(module, name, empty)
    return prepared.to_empty(device="cpu")
