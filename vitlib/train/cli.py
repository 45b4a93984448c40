"""``python -m vitlib.train``: train a family from its recipe, with flags that override it.

Everything that can be checked before training is checked first (the device, the flags against the
recipe, the checkpoint to resume, the image size against the model's constraints, the data), and
every ValueError or FileNotFoundError, then or during training, ends as one ``error: ...`` line
with exit status 2, never a traceback.

Under torchrun (``torchrun --standalone --nproc_per_node=2 -m vitlib.train ...``) every process
runs this same command inside :func:`~vitlib.train.distributed.session`: gloo on CPU, NCCL on
CUDA (each process on the GPU of its local rank), ``--batch-size`` the global batch; rank 0
downloads CIFAR-10 before the others read it, and rank 0 alone prints and writes the checkpoint and
the history.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from ..data import default_image_size
from .checkpoint import load_checkpoint
from .distributed import DEFAULT_TIMEOUT_S, main_first, session, world
from .recipes import RECIPES, build_model, load_recipe_data, mixed_sizes, recipe_for, train_recipe

#: Model flags of the command line; each applies to the families whose recipe sets that keyword.
CLI_MODEL_KEYS = {"patch_size": int, "dim": int, "depth": int, "heads": int, "dim_head": int, "mlp_dim": int,
                  "token_dropout_prob": float}
#: Training flags; each overrides the recipe's ``fit`` keyword of the same name.
CLI_FIT_KEYS = {"epochs": int, "batch_size": int, "lr": float, "weight_decay": float, "warmup_epochs": float,
                "label_smoothing": float}
IN_MEMORY = ("digits", "cifar10")


def _parser() -> argparse.ArgumentParser:
    from ..models import MODELS

    p = argparse.ArgumentParser(
        prog="python -m vitlib.train",
        description="Train a vitlib model from its recipe (vitlib.train.RECIPES[mode][family]); flags override "
                    "the recipe.")
    p.add_argument("--model", default="simple_vit", choices=list(MODELS), help="family (default: simple_vit)")
    p.add_argument("--mode", choices=sorted(RECIPES), default=None,
                   help="recipe sizes: quick (small models; default on CPU) or full (default on CUDA)")
    p.add_argument("--dataset", default=None,
                   help="digits, cifar10 or an image folder path (default: the recipe's)")
    p.add_argument("--image-size", type=int, default=None,
                   help="default: the family's recipe size for that data set (e.g. LeViT: digits 32 px, "
                        "cifar10 64 px), else the data set's default")
    for key, kind in CLI_MODEL_KEYS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=kind, default=None,
                       help="model keyword (default: the recipe's; families whose recipe sets it)")
    for key, kind in CLI_FIT_KEYS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=kind, default=None, help="default: the recipe's")
    p.add_argument("--shift", type=int, default=None,
                   help="random shift augmentation in pixels (in-memory data; default: the recipe's)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, help="write a checkpoint here after every epoch")
    p.add_argument("--resume", type=Path, help="continue from this checkpoint")
    p.add_argument("--history", type=Path, help="write the history to this JSON file")
    p.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="under torchrun: seconds a process waits for a silent peer before the job fails "
                        f"(default {DEFAULT_TIMEOUT_S:.0f})")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="image folders: leave out images that cannot be read (default: stop, naming them)")
    d = p.add_argument_group("distillation (vitlib.distill)")
    d.add_argument("--teacher", type=Path, default=None,
                   help="a checkpoint of a trained model of the same data (e.g. --model resnet --checkpoint T): "
                        "the student learns from its outputs too; required by distillable_vit")
    d.add_argument("--temperature", type=float, default=None, help="soft distillation's temperature (recipe: 3)")
    d.add_argument("--alpha", type=float, default=None, help="the teacher's share of the loss, 0-1 (recipe: 0.5)")
    d.add_argument("--hard", action="store_true", help="learn the teacher's top class (DeiT) instead of its "
                                                       "softened distribution")
    return p


def _families_with(key: str, mode: str) -> list[str]:
    from ..models import MODELS

    return [family for family in MODELS if key in recipe_for(family, mode)["model"]]


def _recipe_image_size(family: str, dataset: str, mode: str) -> int | None:
    """The family's recipe size for ``dataset``, from the chosen mode's recipe or else another's."""
    for m in [mode, *(other for other in RECIPES if other != mode)]:
        spec = recipe_for(family, m)["dataset"]
        if spec["name"] == dataset:
            return spec["image_size"]
    return None


def _check_resume(path: Path, model_class: str, epochs: int) -> None:
    state = load_checkpoint(path)  # a ValueError for a file that is not a readable checkpoint
    if state["model_class"] != model_class:
        raise ValueError(f"--resume {path} holds a {state['model_class']}; this command trains a {model_class}")
    if state.get("epochs") not in (None, epochs):
        raise ValueError(f"--resume {path} was made for --epochs {state['epochs']}; received {epochs} "
                         "(the learning-rate schedule depends on it)")


def _check_model(family: str, config: dict, recipe: dict, dataset: str, image_size: int) -> None:
    """Build the model on the meta device (no memory, no data) so that a size it cannot take is
    refused before the data are loaded."""
    from types import SimpleNamespace

    size = (image_size, image_size)
    if recipe["dataset"].get("mixed_scales"):
        size = mixed_sizes(size, recipe["dataset"]["mixed_scales"], config.get("patch_size", 1))[-1]
    shape = SimpleNamespace(image_size=size, channels=1 if dataset == "digits" else 3, num_classes=10)
    with torch.device("meta"):
        build_model(family, shape, **config)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _print_epoch(record: dict) -> None:
    test = f", test accuracy {record['test_acc']:.4f}" if "test_acc" in record else ""
    print(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}{test}, "
          f"{record['images_per_s']:.0f} images/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Train from the command line; returns 0, or exits with status 2 and one ``error:`` line.
    Under torchrun, each process runs it and trains its share (see the module's docstring)."""
    p = _parser()
    args = p.parse_args(argv)
    try:
        with session(args.device, timeout_s=args.dist_timeout) as device:
            return _train(p, args, device)
    except ValueError as err:  # the device, before any process group exists
        p.error(_one_line(err))


def _train(p: argparse.ArgumentParser, args: argparse.Namespace, device) -> int:
    w = world()
    mode = args.mode or ("full" if device.type == "cuda" else "quick")
    family = args.model
    recipe = recipe_for(family, mode)
    where = f"vitlib.train.RECIPES[{mode!r}][{recipe['model']['name']!r}]"
    config = {k: v for k, v in recipe["model"].items() if k != "name"}
    for key in CLI_MODEL_KEYS:
        value = getattr(args, key)
        if value is None:
            continue
        if key not in config:
            p.error(f"--{key.replace('_', '-')} applies to {' and '.join(_families_with(key, mode))}; {family} is "
                    f"configured by {where} ({config})")
        config[key] = value
    dataset = args.dataset or recipe["dataset"]["name"]
    if args.skip_unreadable and dataset in IN_MEMORY:
        p.error(f"--skip-unreadable applies to image folders; received --dataset {dataset}")
    if args.teacher is None and family == "distillable_vit":
        p.error("distillable_vit learns from a teacher: pass --teacher CHECKPOINT (train one first, e.g. "
                "python -m vitlib.train --model resnet --checkpoint teacher.safetensors)")
    if args.teacher is None and (args.temperature is not None or args.alpha is not None or args.hard):
        p.error("--temperature, --alpha and --hard set distillation, which needs --teacher CHECKPOINT")
    if args.teacher is not None and family == "navit":
        p.error("--teacher: NaViT trains on lists of images of different sizes, which a teacher cannot take as one "
                "batch; distil into another family")
    image_size = args.image_size or _recipe_image_size(family, dataset, mode) or default_image_size(dataset)
    fit_opts = {k: getattr(args, k) for k in CLI_FIT_KEYS if getattr(args, k) is not None}
    shift = args.shift if args.shift is not None else recipe["fit"].get("shift", 0)
    run = {"dataset": {**recipe["dataset"], "name": dataset, "image_size": image_size},
           "model": {"name": family, **config},
           "fit": {**recipe["fit"], **fit_opts, "shift": shift}}
    batch = run["fit"]["batch_size"]
    if batch % w.size:
        p.error(f"--batch-size is the global batch, split evenly over the {w.size} processes; received {batch}, "
                f"which {w.size} does not divide")
    try:
        from ..models import MODELS

        if args.resume is not None:
            _check_resume(args.resume, MODELS[family].__name__, run["fit"]["epochs"])
        _check_model(family, config, run, dataset, image_size)
        teacher = None
        if args.teacher is not None:
            from ..distill import load_teacher

            teacher = load_teacher(args.teacher)  # a ValueError for a file that is not a readable checkpoint
        try:
            # one download into the shared data folder: rank 0 first (data already at hand need no wait)
            with main_first() if dataset == "cifar10" else nullcontext():
                data = load_recipe_data(run, seed=args.seed,
                                        **({} if dataset in IN_MEMORY else {"skip_unreadable": args.skip_unreadable}))
        except RuntimeError as err:  # CIFAR-10 not downloadable here, or a corrupt archive
            p.error(_one_line(err))
        placement = f"{device}" if w.size == 1 else \
            f"{w.size} processes, {device.type}, {batch // w.size} of each global batch of {batch} per process"
        if w.main:
            print(f"{data}\n{MODELS[family].__name__} {config} ({mode} recipe, {placement})", flush=True)
        bar = w.main and sys.stderr.isatty()  # a progress bar on a terminal, a line per epoch in a log
        common = dict(seed=args.seed, device=device, data=data, amp=args.amp, checkpoint=args.checkpoint,
                      resume=args.resume, progress=bar, callback=None if bar else _print_epoch)
        if teacher is None:
            model, history, data = train_recipe(run, **common)
        else:
            from ..distill import load_teacher, train_student
            from .loop import evaluate

            teacher = load_teacher(args.teacher, data, device)
            accuracy = evaluate(teacher, data.test, device=device)["accuracy"]
            if w.main:
                print(f"teacher: {type(teacher).__name__} from {args.teacher}, test accuracy {accuracy:.4f}",
                      flush=True)
            model, history, data, _ = train_student(run, teacher, temperature=args.temperature, alpha=args.alpha,
                                                    hard=True if args.hard else None, mode=mode, **common)
    except (ValueError, FileNotFoundError) as err:
        p.error(_one_line(err))
    if w.main:
        last = history.final
        print(f"epoch {last['epoch']}: test accuracy {last.get('test_acc', float('nan')):.4f}, "
              f"train loss {last['train_loss']:.4f}, {last['wall_s']:.1f} s")
        if args.history:
            args.history.parent.mkdir(parents=True, exist_ok=True)
            args.history.write_text(json.dumps(list(history), indent=1) + "\n")
    return 0
