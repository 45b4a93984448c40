"""Knowledge distillation: a student learns from the labels and from a frozen teacher's outputs.

The loss, for class logits ``s``, distillation logits ``d`` (the same tensor for a student with
one head), teacher logits ``t``, labels ``y`` and weight ``alpha``::

    (1 - alpha) * CE(s, y) + alpha * KL(softmax(t / T) || softmax(d / T)) * T^2      (soft)
    (1 - alpha) * CE(s, y) + alpha * CE(d, argmax t)                                 (hard)

Images without a label (``y = UNLABELLED``) learn from the teacher alone: a teacher can label a
transfer set that nobody annotated, which is where distillation pays most on small data.

Soft distillation (Hinton et al., 2015) matches the teacher's whole distribution softened by the
temperature ``T``; the ``T^2`` keeps the gradients' scale independent of ``T``. Hard distillation
(DeiT) treats the teacher's top class as a second label. The KL divergence is averaged over the
batch (PyTorch's ``batchmean``, the divergence's definition; DeiT divides by the number of logits
instead, which only rescales ``alpha``).

What vit-pytorch's ``DistillWrapper`` gets wrong and this module does not:

* the teacher stays in eval mode whatever mode the wrapper is put in (in training mode its batch
  norms would normalise with each batch's statistics and update their running averages: the
  teacher drifts, and its targets with it), and it is frozen (``requires_grad=False``);
* the teacher is not a submodule: ``parameters()``, ``state_dict()`` and an optimiser see only what
  trains, while ``.to()`` still moves the teacher;
* the distillation token and head belong to the student (:class:`DistillableViT`), so they are
  saved with it and move with it.

:class:`DistillationLoss` is the same loss as a ``loss_fn`` for :func:`vitlib.train.fit`; the teacher
runs once per batch, and not at all for images it has already seen when the data are not augmented
(:meth:`DistillationLoss.precompute`): a distillation step costs the student's step plus at most
one teacher forward.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .compat import apply_conversion
from .models import DistillableViT
from .models.base import has_distill_head
from .train.loop import CrossEntropy, Inputs, unwrap

__all__ = ["DistillableViT", "DistillWrapper", "DistillationLoss", "distillation_loss", "image_keys", "UNLABELLED",
           "load_teacher", "train_student", "agreement"]

#: The label of an image without one (PyTorch's ``ignore_index``): only the teacher teaches it.
UNLABELLED = -100
_KEY_LIMIT = 1 << 21  # 16-bit words an image may have for its key to be exact (sums below 2**63)


def distillation_loss(logits: torch.Tensor, distill_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor, *, temperature: float = 1.0, alpha: float = 0.5, hard: bool = False,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """The loss of the module docstring, from logits already computed (in float32). Images labelled
    :data:`UNLABELLED` learn from the teacher only: the labels' term averages over labelled images
    (and is zero for a batch without any)."""
    labelled = (labels != UNLABELLED).sum().clamp(min=1)
    ce = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing, ignore_index=UNLABELLED,
                         reduction="sum") / labelled
    teacher_logits = teacher_logits.detach().float()
    if hard:
        kd = F.cross_entropy(distill_logits.float(), teacher_logits.argmax(-1))
    else:
        t = temperature
        kd = F.kl_div(F.log_softmax(distill_logits.float() / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                      reduction="batchmean", log_target=True) * t * t
    return (1 - alpha) * ce + alpha * kd


def image_keys(images: torch.Tensor) -> torch.Tensor:
    """One int64 key per image, computed exactly from the image's bits: equal images get equal
    keys on any device and in any batch; two different images collide with probability at most
    2**-26 (a random linear function of their 16-bit words)."""
    flat = images.detach().reshape(len(images), -1).contiguous().view(torch.int16)
    if flat.shape[1] > _KEY_LIMIT:
        raise ValueError(f"image_keys handles images of up to {_KEY_LIMIT // 2} float32 values; received "
                         f"{flat.shape[1] // 2}")
    gen = torch.Generator().manual_seed(20_210_623)
    weights = torch.randint(0, 1 << 26, (flat.shape[1],), generator=gen, dtype=torch.int64).to(images.device)
    return ((flat.long() & 0xFFFF) * weights).sum(dim=1)


def _check_unit(name: str, value: float, low: float, high: float | None, strict_low: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if strict_low else value >= low) and (high is None or value <= high)
    if not ok:
        bounds = f"{'>' if strict_low else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be a number {bounds}; received {value!r}")
    return float(value)


class DistillationLoss(CrossEntropy):
    """``loss_fn(model, (x, y)) -> (loss, class logits)`` for :func:`vitlib.train.fit`, against a
    frozen ``teacher`` (see the module docstring for the formula).

    A student with a distillation head (:class:`DistillableViT`, a LeViT built with
    ``num_distill_classes``) is asked for both heads, ``model(x, head="both")`` (unless
    ``forward_kwargs`` name a ``head``), and its class head learns the labels, its distillation
    head the teacher; a model that returns one tensor learns from both with it (a model returning a
    pair ``(logits, distill_logits)`` unasked is taken as such). ``label_smoothing`` applies to the
    labels' term only; ``forward_kwargs`` go to the student.
    The teacher is not a submodule (it is in no ``parameters()`` or ``state_dict()``), is frozen,
    and stays in eval mode; ``.to()`` moves it. ``teacher_forwards`` counts its forward passes.
    """

    def __init__(self, teacher: nn.Module, *, temperature: float = 1.0, alpha: float = 0.5, hard: bool = False,
                 label_smoothing: float = 0.0, forward_kwargs: dict | None = None) -> None:
        super().__init__(label_smoothing, forward_kwargs)
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module; received {type(teacher).__name__}")
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be True (the teacher's top class) or False (its softened distribution); "
                            f"received {hard!r}")
        self.temperature = _check_unit("temperature", temperature, 0.0, None, strict_low=True)
        self.alpha = _check_unit("alpha", alpha, 0.0, 1.0, strict_low=False)
        self.hard = hard
        teacher.requires_grad_(False).eval()
        self.__dict__["_teacher"] = teacher  # kept out of the submodules: nothing of it trains
        self.teacher_forwards = 0
        for name in ("_cache_keys", "_cache_order", "_cache_images", "_cache_logits"):
            self.register_buffer(name, None, persistent=False)

    @property
    def teacher(self) -> nn.Module:
        return self.__dict__["_teacher"]

    def train(self, mode: bool = True) -> "DistillationLoss":
        super().train(mode)
        self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .double(): the teacher too (see vitlib.compat)
        super()._apply(fn, *args, **kwargs)
        apply_conversion(self.teacher, fn, *args, **kwargs)
        return self

    # ----- the teacher's logits --------------------------------------------------------------

    @torch.no_grad()
    def _run_teacher(self, x: torch.Tensor) -> torch.Tensor:
        if self.teacher.training:  # someone called teacher.train(): batch norms would drift
            self.teacher.eval()
        self.teacher_forwards += 1
        out = self.teacher(x)
        if isinstance(out, (tuple, list)):
            raise ValueError(f"the teacher must return one logits tensor; {type(self.teacher).__name__} returned a "
                             f"{type(out).__name__} of {len(out)} in eval mode")
        return out

    @torch.no_grad()
    def precompute(self, images: torch.Tensor | torch.utils.data.Dataset, batch_size: int = 256) -> None:
        """Run the teacher once over ``images`` (a tensor, or an in-memory dataset such as the
        digits' :class:`~vitlib.data.TensorImageDataset`) and keep its logits: a later batch made
        only of these images, unchanged, needs no teacher forward. Images are recognised by their
        exact bits (:func:`image_keys`, then compared in full), so an augmented batch, which
        matches nothing, simply runs the teacher."""
        if not isinstance(images, torch.Tensor):
            images = getattr(images, "images", None)
            if not isinstance(images, torch.Tensor):
                raise ValueError("precompute needs images in memory (a tensor or a dataset with an .images tensor, "
                                 "such as the digits); a dataset that augments per sample has nothing to cache")
        device = next(self.teacher.parameters(), torch.empty(0)).device
        images = images.to(device)
        logits = torch.cat([self._run_teacher(images[i:i + batch_size]).float()
                            for i in range(0, len(images), batch_size)])
        keys = image_keys(images)
        keys, order = keys.sort()
        self._cache_keys, self._cache_order, self._cache_images, self._cache_logits = keys, order, images, logits

    def clear_cache(self) -> None:
        """Forget the precomputed logits."""
        self._cache_keys = self._cache_order = self._cache_images = self._cache_logits = None

    def _cached(self, x: torch.Tensor) -> torch.Tensor | None:
        if self._cache_keys is None or x.shape[1:] != self._cache_images.shape[1:]:
            return None
        keys = image_keys(x)
        pos = torch.searchsorted(self._cache_keys, keys).clamp(max=len(self._cache_keys) - 1)
        if not torch.equal(self._cache_keys[pos], keys):
            return None
        idx = self._cache_order[pos]
        if not torch.equal(self._cache_images[idx], x):  # a key collision: rare, and then the teacher runs
            return None
        return self._cache_logits[idx]

    def teacher_logits(self, x: Inputs) -> torch.Tensor:
        """The teacher's logits for batch ``x``, from the cache when every image is in it."""
        if isinstance(x, torch.Tensor):
            cached = self._cached(x)
            if cached is not None:
                return cached
        return self._run_teacher(x)

    # ----- the loss ----------------------------------------------------------------------------

    def logits(self, model: nn.Module, x: Inputs, forward_kwargs: dict | None = None):
        """The student's forward pass: both heads of a student with a distillation head, else its logits.
        ``forward_kwargs`` (this call's) go over the loss's own."""
        kwargs = {**self.forward_kwargs, **(forward_kwargs or {})}
        if "head" not in kwargs and has_distill_head(unwrap(model)):
            kwargs = {**kwargs, "head": "both"}
        return model(x, **kwargs)

    def forward(self, model: nn.Module, batch: tuple[Inputs, torch.Tensor], *, temperature: float | None = None,
                alpha: float | None = None, forward_kwargs: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, class logits)``; ``temperature``, ``alpha`` and ``forward_kwargs`` (the student's
        keywords, over the loss's own) apply to this call only: the loss itself never changes."""
        x, y = batch
        out = self.logits(model, x, forward_kwargs)
        if isinstance(out, (tuple, list)):
            if len(out) != 2:
                raise ValueError(f"a student returns logits or (logits, distill_logits); received {len(out)} outputs")
            logits, distill = out
        else:
            logits = distill = out
        teacher = self.teacher_logits(x)
        if distill.shape != teacher.shape:
            raise ValueError(f"the teacher gives logits of shape {tuple(teacher.shape)} and the student's "
                             f"distillation head {tuple(distill.shape)}: they must classify the same classes")
        t = self.temperature if temperature is None else _check_unit("temperature", temperature, 0.0, None, True)
        a = self.alpha if alpha is None else _check_unit("alpha", alpha, 0.0, 1.0, False)
        loss = distillation_loss(logits, distill, teacher, y, temperature=t, alpha=a, hard=self.hard,
                                 label_smoothing=self.label_smoothing)
        return loss, logits

    def extra_repr(self) -> str:
        return (f"teacher={type(self.teacher).__name__}, temperature={self.temperature}, alpha={self.alpha}, "
                f"hard={self.hard}, {super().extra_repr()}")


class DistillWrapper(nn.Module):
    """vit-pytorch's ``DistillWrapper``, done right: ``loss = distiller(img, labels)``.

    ``student`` is a :class:`DistillableViT` (or a LeViT with a distillation head, or any model
    with one head); ``teacher`` any classifier of the same images and classes, e.g. a torchvision
    CNN. ``temperature``, ``alpha`` and ``hard`` as in :class:`DistillationLoss`. The teacher is
    frozen and stays in eval mode; ``distiller.parameters()`` holds the student's parameters only,
    so ``torch.optim.AdamW(distiller.parameters())`` trains what should train.
    """

    def __init__(self, *, teacher: nn.Module, student: nn.Module, temperature: float = 1.0, alpha: float = 0.5,
                 hard: bool = False, mlp_layernorm: bool = False, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if mlp_layernorm:
            raise ValueError("mlp_layernorm=True puts a LayerNorm in vit-pytorch's distillation head; here the head "
                             "belongs to the student (DistillableViT.distill_head, one Linear after the "
                             "transformer's final norm), so it takes no option in the wrapper")
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be a torch.nn.Module; received {type(student).__name__}")
        for attr in ("image_size", "channels", "num_classes"):
            s, t = getattr(student, attr, None), getattr(teacher, attr, None)
            if s is not None and t is not None and s != t:
                raise ValueError(f"the teacher and the student must see the same images and classes; the teacher's "
                                 f"{attr} is {t}, the student's {s}")
        self.student = student
        self.loss = DistillationLoss(teacher, temperature=temperature, alpha=alpha, hard=hard,
                                     label_smoothing=label_smoothing)

    @property
    def teacher(self) -> nn.Module:
        return self.loss.teacher

    @property
    def temperature(self) -> float:
        return self.loss.temperature

    @property
    def alpha(self) -> float:
        return self.loss.alpha

    @property
    def hard(self) -> bool:
        return self.loss.hard

    def forward(self, img: torch.Tensor, labels: torch.Tensor, temperature: float | None = None,
                alpha: float | None = None, **kwargs) -> torch.Tensor:
        """The distillation loss of the student on ``img``; ``kwargs`` go to the student, in this call
        only (like ``temperature`` and ``alpha``, they change nothing in the wrapper or its loss)."""
        loss, _ = self.loss(self.student, (img, labels), temperature=temperature, alpha=alpha, forward_kwargs=kwargs)
        return loss


@torch.no_grad()
def agreement(student: nn.Module, teacher: nn.Module, dataset, *, batch_size: int = 512,
              forward_kwargs: dict | None = None) -> float:
    """The share (0-1) of ``dataset``'s images on which the student's top class (eval mode) is the
    teacher's."""
    from .train.loop import iterate_batches, resolve_device

    from .bench import eval_mode

    device = resolve_device(None, student)
    same, n = 0, 0
    with eval_mode(student), eval_mode(teacher):
        for x, _ in iterate_batches(dataset, batch_size, shuffle=False, device=device):
            a = student(x, **(forward_kwargs or {})).argmax(-1)
            same += (a == teacher(x).argmax(-1)).sum().item()
            n += len(x)
    if n == 0:
        raise ValueError("agreement received an empty dataset")
    return same / n


def load_teacher(path: str | Path, data=None, device: torch.device | str = "cpu") -> nn.Module:
    """A teacher from a vitlib checkpoint, in eval mode, checked against ``data`` (a
    :class:`~vitlib.data.DataSplit`) when given: same classes, image size and channels."""
    from .train.checkpoint import load_model

    teacher = load_model(path, device)
    if data is not None:
        expected = {"num_classes": data.num_classes, "image_size": tuple(data.image_size), "channels": data.channels}
        for attr, value in expected.items():
            got = getattr(teacher, attr, None)
            got = tuple(got) if isinstance(got, list) else got
            if got is not None and got != value:
                raise ValueError(f"the teacher in {path} has {attr}={got}; the student's data ({data.name}) has "
                                 f"{attr}={value}")
    return teacher


def train_student(recipe: dict, teacher: nn.Module, *, temperature: float | None = None, alpha: float | None = None,
                  hard: bool | None = None, data=None, seed: int = 0, device: torch.device | str = "cpu",
                  mode: str | None = None, **train_kwargs):
    """Train ``recipe``'s model against ``teacher`` and return ``(model, history, data, loss)``.

    ``temperature``, ``alpha`` and ``hard`` default to the recipe's ``distill`` section (else the
    ``distillable_vit`` recipe's of ``mode``, ``"quick"`` or ``"full"``; None:
    :func:`vitlib.train.recipes.default_mode` of ``device``, i.e. ``$VITLIB_MODE`` when set, else
    full on CUDA and quick elsewhere). A LeViT gets a distillation head; a model with one head learns
    from both targets with it. Without augmentation the teacher's logits are computed once for the
    whole training set; ``train_kwargs`` go to :func:`vitlib.train.train_recipe`.
    """
    from .data import TensorImageDataset
    from .train.recipes import default_mode, load_recipe_data, recipe_for, train_recipe

    family = recipe["model"]["name"]
    if family == "navit":
        raise ValueError("NaViT trains on lists of images of different sizes, which a teacher cannot take as one "
                         "batch; distil into a model that takes image tensors")
    mode = default_mode(device) if mode is None else mode
    settings = {**recipe_for("distillable_vit", mode)["distill"], **recipe.get("distill", {})}
    chosen = {"temperature": temperature, "alpha": alpha, "hard": hard}
    settings.update({k: v for k, v in chosen.items() if v is not None})
    data = load_recipe_data(recipe, seed=seed) if data is None else data
    overrides = dict(train_kwargs.pop("model_overrides", None) or {})
    if family == "levit":
        overrides.setdefault("num_distill_classes", data.num_classes)
    loss = DistillationLoss(teacher.to(device), label_smoothing=recipe["fit"].get("label_smoothing", 0.0),
                            **settings)
    if "augment" in train_kwargs:
        augmented = train_kwargs["augment"] is not None
    else:
        augmented = bool(recipe["fit"].get("shift", 0))
    if not augmented and isinstance(data.train, TensorImageDataset):
        loss.precompute(data.train)
    model, history, data = train_recipe(recipe, seed=seed, device=device, data=data, loss_fn=loss,
                                        model_overrides=overrides, **train_kwargs)
    return model, history, data, loss
