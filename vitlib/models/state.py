"""What library code leaves as it found it: every module's train/eval mode, and torch's random state.

* :func:`module_modes` and :func:`restore_modes`: each module's mode recorded and put back, a
  submodule the caller had left in the other mode included (``model.train(was_training)`` would set
  the whole tree to the root's mode);
* :func:`private_rng`: a block that draws from torch's global generators (a model's initialisation,
  dropout, random inputs) and leaves the caller's random state as it was; with a seed, the block
  draws the same numbers every time;
* :func:`seed_rng`: seed torch's CPU generator and one device's, and no other (``torch.manual_seed``
  also seeds every GPU, even one not yet initialised).

Models, measuring, training and export code all use these; none of them calls ``torch.manual_seed``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch
from torch import nn

__all__ = ["module_modes", "restore_modes", "private_rng", "seed_rng"]


def module_modes(model: nn.Module) -> dict[nn.Module, bool]:
    """Each module of ``model`` (``model`` first) mapped to whether it is in training mode."""
    return {m: m.training for m in model.modules()}


def restore_modes(modes: Mapping[nn.Module, bool]) -> None:
    """Put every module of :func:`module_modes`'s record back in its mode: the root through its
    ``train()`` (a model that overrides it, e.g. to keep a teacher in eval mode, still does so),
    then each module as it was."""
    if not modes:
        return
    root = next(iter(modes))
    root.train(modes[root])
    for module, mode in modes.items():
        module.training = mode


def _accelerator(device: torch.device | str | None) -> torch.device | None:
    """``device`` when it has a generator of its own (a GPU), else None (the CPU's is always kept)."""
    if device is None:
        return None
    device = torch.device(device)
    return device if device.type not in ("cpu", "meta") else None


def seed_rng(seed: int, device: torch.device | str | None = None) -> None:
    """Seed torch's CPU generator with ``seed``, and ``device``'s when it is a GPU; no other
    device's. Inside :func:`private_rng` (or a process of one's own) only: it changes the global
    random state."""
    torch.random.default_generator.manual_seed(seed)
    dev = _accelerator(device)
    if dev is None:
        return
    if dev.type == "cuda":
        torch.cuda.init()  # seed now, not lazily on whichever device is current at initialisation
        with torch.cuda.device(dev):
            torch.cuda.manual_seed(seed)
    else:
        torch.get_device_module(dev.type).manual_seed(seed)


@contextlib.contextmanager
def private_rng(seed: int | None = None, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block on torch's global generators (the CPU's, and ``device``'s when it is a GPU),
    then give them back the state they had: the caller's random state is left as it was. With
    ``seed``, the block starts from :func:`seed_rng` ``(seed, device)``, so that it draws the same
    numbers every time (a model built inside has the same weights for the same seed)."""
    dev = _accelerator(device)
    module = torch.get_device_module(dev.type) if dev is not None else None
    cpu = torch.get_rng_state()
    saved = module.get_rng_state(dev) if module is not None else None
    try:
        if seed is not None:
            seed_rng(seed, dev)
        yield
    finally:
        torch.set_rng_state(cpu)
        if module is not None:
            module.set_rng_state(saved, dev)
