"""Where and with what a measurement was made, stored beside every figure a suite writes."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path

import torch

from .timing import default_threads

__all__ = ["provenance", "device_name", "cpu_features"]


#: cpuinfo flags of instructions that compute in bfloat16 and in float16 (x86 and Arm).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert", "bf16")
FP16_FLAGS = ("avx512_fp16", "amx_fp16", "asimdhp")


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """What this CPU offers for reduced precision: torch's vector capability (``AVX2``,
    ``AVX512``, ...), and whether the CPU reports instructions that compute in bfloat16
    (:data:`BF16_FLAGS`) or float16 (:data:`FP16_FLAGS`). Flags read from ``cpuinfo`` (Linux, x86
    or Arm); where there is none (macOS, Windows) they are None: unknown, not absent."""
    path = Path(cpuinfo)
    flags = None
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if line.split(":", 1)[0].strip() in ("flags", "Features"):
                flags = set(line.split(":", 1)[1].split())
                break
    known = flags is not None

    def has(*names):
        return any(n in flags for n in names) if known else None

    return {"capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_instructions": has(*BF16_FLAGS),
            "fp16_instructions": has(*FP16_FLAGS),
            "model": next((line.split(":", 1)[1].strip() for line in
                           (path.read_text(errors="replace").splitlines() if known else [])
                           if line.startswith("model name")), None)}


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
    """The commit of the source checkout vitlib runs from (``+dirty`` with uncommitted changes to
    tracked files), read from the checkout's own git repository; for an installed copy, or a
    checkout that is no repository of its own (an unpacked archive, maybe inside another
    project's repository), the commit pip installed it from; else ``"unknown"``."""
    from ..locations import checkout

    root = checkout()
    return (_checkout_commit(root) if root is not None else None) or _installed_commit()


def _checkout_commit(root: Path) -> str | None:
    """The commit of the git repository at ``root``, or None where ``root`` holds none: git may not
    look above ``root`` (``GIT_CEILING_DIRECTORIES``) nor follow the caller's ``GIT_DIR``, so the
    repository of a folder the checkout merely sits in is never read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CEILING_DIRECTORIES"] = str(Path(root).resolve().parent)

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, timeout=5)

    try:
        out = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
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
