"""Checkpoints: safetensors files that rebuild their model.

A checkpoint holds the weights, the optimizer's tensors, and as JSON metadata the model's class and
config, the optimizer's settings and the training state (epoch, history). ``load_model(path)``
rebuilds the model. Nothing is unpickled. Files are written to a temporary name and renamed, so a
crash never leaves a half-written checkpoint; a file that is not one (truncated, corrupt, another
format) is refused with a ValueError naming it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..models.state import private_rng
from .loop import unwrap

CHECKPOINT_FORMAT = "vitlib-checkpoint-1"


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def _config_json(model: nn.Module, config: dict) -> str:
    try:
        return json.dumps(_jsonable(config))
    except TypeError as err:  # e.g. NaViT's token_dropout_prob given as a function
        raise ValueError(f"save_checkpoint stores the model's configuration as JSON, and {type(model).__name__}'s "
                         f"cannot be ({err}); received config {config!r}") from err


def save_checkpoint(path: str | Path, model: nn.Module, *, optimizer: torch.optim.Optimizer | None = None,
                    scaler: torch.amp.GradScaler | None = None, state: dict | None = None) -> Path:
    """Write model weights (and optimizer tensors) to a safetensors file, atomically.

    The model must carry a ``config`` dict (every vitlib model does) so that :func:`load_model`
    can rebuild it; optimizer settings, scaler state and ``state`` go into the file's metadata as
    JSON. A DistributedDataParallel wrapper is saved as the model inside it.
    """
    from safetensors.torch import save_file

    path = Path(path)
    model = unwrap(model)
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"save_checkpoint needs a vitlib model with a .config; received {type(model).__name__}")
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model_class": type(model).__name__,
        "model_config": _config_json(model, config),
        "state": json.dumps(_jsonable(state or {})),
    }
    if optimizer is not None:
        opt = optimizer.state_dict()
        settings = {"param_groups": opt["param_groups"], "state": {}}
        for pid, pstate in opt["state"].items():
            settings["state"][str(pid)] = {}
            for key, value in pstate.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{pid}/{key}"] = value.detach().cpu().contiguous()
                else:
                    settings["state"][str(pid)][key] = value
        meta["optimizer"] = json.dumps(_jsonable(settings))
    if scaler is not None and scaler.is_enabled():
        meta["scaler"] = json.dumps(_jsonable(scaler.state_dict()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _read(path: str | Path, map_location) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            meta = f.metadata() or {}
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"{path} is not a vitlib checkpoint (format {meta.get('format')!r}, "
                                 f"expected {CHECKPOINT_FORMAT!r})")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        for key in ("model_class", "model_config", "state"):
            if key not in meta:
                raise ValueError(f"{path} is not a readable vitlib safetensors checkpoint: its metadata has no {key!r}")
        for key in ("model_config", "state"):
            json.loads(meta[key])
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path} is not a readable vitlib safetensors checkpoint ({reason}); the file is "
                         f"truncated, corrupt or of another format ({path.stat().st_size} bytes)") from err
    return tensors, meta


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, str], path) -> None:
    weights = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"{path} holds a {meta['model_class']} built with {meta['model_config']}, whose weights do "
                         f"not fit the model given ({getattr(model, 'config', '?')}): "
                         f"{str(err).splitlines()[-1].strip()}") from err


def load_checkpoint(path: str | Path, *, model: nn.Module | None = None, optimizer=None, scaler=None,
                    map_location: torch.device | str = "cpu") -> dict:
    """Load what :func:`save_checkpoint` wrote into the given objects; return the saved ``state``
    with ``model_class`` and ``model_config`` added."""
    tensors, meta = _read(path, map_location)
    if model is not None:
        model = unwrap(model)
        if type(model).__name__ != meta["model_class"]:
            raise ValueError(f"{path} holds a {meta['model_class']}; received a {type(model).__name__}")
        _load_weights(model, tensors, meta, path)
    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(f"{path} holds no optimizer state")
        settings = json.loads(meta["optimizer"])
        state = {}
        for pid, pstate in settings["state"].items():
            state[int(pid)] = dict(pstate)
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, pid, name = key.split("/", 2)
                state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": settings["param_groups"]})
    if scaler is not None and "scaler" in meta:
        scaler.load_state_dict(json.loads(meta["scaler"]))
    out = json.loads(meta["state"])
    out.update(model_class=meta["model_class"], model_config=json.loads(meta["model_config"]))
    return out


def load_model(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the model saved in ``path`` from its class and config, load its weights, eval mode."""
    from ..models import MODELS, NaViTNested

    tensors, meta = _read(path, "cpu")
    classes = {cls.__name__: cls for cls in (*MODELS.values(), NaViTNested)}
    name = meta["model_class"]
    if name not in classes:
        raise ValueError(f"{path} holds a {name}; vitlib knows {sorted(classes)}")
    with private_rng():  # the initial weights, overwritten below, leave the caller's random state alone
        model = classes[name](**json.loads(meta["model_config"]))
    _load_weights(model, tensors, meta, path)
    return model.to(device).eval()
