"""Where and with what a measurement was made, stored beside every figure a suite writes."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path

import torch

from .timing import default_threads

__all__ = ["provenance", "device_name"]


def device_name(device: torch.device | str) -> str:
    """The device's name: the GPU's, or the CPU model and its logical CPUs."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical CPUs)"


def _installed_commit() -> str:
    """The commit an installed vitlib was built from, as pip recorded it for a ``git+`` install
    (``direct_url.json``), or ``"unknown"``."""
    import json
    from importlib import metadata

    try:
        direct = metadata.distribution("vitlib").read_text("direct_url.json")
        return json.loads(direct or "{}").get("vcs_info", {}).get("commit_id") or "unknown"
    except (metadata.PackageNotFoundError, ValueError):
        return "unknown"


def _git_commit() -> str:
    """The commit of the checkout vitlib runs from (``+dirty`` with uncommitted changes to tracked
    files); for an installed copy, the commit pip installed it from."""
    from ..locations import checkout

    root = checkout()
    if root is None:
        return _installed_commit()
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance(device: torch.device | str = "cpu", threads: int | None = None) -> dict:
    """Where and with what a measurement was made: device, versions, date, commit, threads."""
    from .. import __version__

    device = torch.device(device)
    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:  # pragma: no cover
        tv = None
    return {
        "device": str(device),
        "device_name": device_name(device),
        "threads": threads or default_threads(),
        "torch": torch.__version__,
        "torchvision": tv,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "vitlib": __version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
    }
