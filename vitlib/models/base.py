"""The contract every vitlib model family shares, and the checks their constructors use.

Measuring, training and export code never asks "is this a LeViT?": it asks the model. Every family
derives from :class:`VisionModel` and answers the same questions the same way:

* ``config``: the constructor's keyword arguments, enough to rebuild the model (checkpoints);
* ``image_size`` ``(height, width)``, ``channels``, ``num_classes``;
* :meth:`~VisionModel.example_input`: a random input of the right shape, dtype and device;
* timm's forward contract: ``forward(x) == forward_head(forward_features(x))``,
  ``forward_head(features, pre_logits=True)`` (the ``(batch, num_features)`` vector the
  classifier reads), :meth:`~VisionModel.get_classifier` and :meth:`~VisionModel.reset_classifier`;
* :meth:`~VisionModel.parts`: the named pieces a chapter times or counts (they cover the model);
* :meth:`~VisionModel.components`: which module or parameter is patch embedding, positions and
  tokens, attention, MLP or head, for tables of parameters and FLOPs by component;
* :meth:`~VisionModel.no_weight_decay`: the parameters that take no weight decay;
* :meth:`~VisionModel.attention_maps`: every attention matrix of one forward pass, in eval mode.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import check_images, record_attention
from .state import module_modes, restore_modes

__all__ = ["VisionModel", "PatchClassifier", "check_positive", "check_probability", "owner_of", "model_config",
           "HEADS", "check_head", "select_head", "check_num_classes", "classifier", "has_distill_head"]

#: What a model with a class head and a distillation head returns: ``"both"`` heads' logits as a
#: pair, their ``"mean"`` (DeiT's inference), or one head alone (``"class"``, ``"distill"``).
HEADS = ("mean", "class", "distill", "both")


def check_positive(**values: int) -> None:
    """Raise ValueError naming every hyperparameter that is not a positive int."""
    bad = {k: v for k, v in values.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"expected positive ints; received {', '.join(f'{k}={v!r}' for k, v in bad.items())}")


def check_probability(**values: float) -> None:
    """Raise ValueError naming every value that is not a probability in [0, 1)."""
    bad = {k: v for k, v in values.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) < 1.0}
    if bad:
        raise ValueError(f"expected probabilities in [0, 1); received {', '.join(f'{k}={v!r}' for k, v in bad.items())}")


def check_head(head: str | None, name: str = "head", *, equal_classes: bool = True,
               has_distill: bool = True) -> None:
    """Raise ValueError unless ``head`` is None or one of :data:`HEADS` this model can give:
    ``"mean"`` needs two heads over the same classes, anything but ``"class"`` a distillation head."""
    if head is None:
        return
    if head not in HEADS:
        raise ValueError(f"{name} must be one of {HEADS}; received {head!r}")
    if not has_distill and head != "class":
        raise ValueError(f"{name}={head!r} needs a distillation head, and this model has none; use 'class' or None")
    if head == "mean" and not equal_classes:
        raise ValueError(f"{name}='mean' averages the class and distillation heads, which needs both over the same "
                         "classes; these differ (use 'class', 'distill' or 'both')")


def select_head(logits: torch.Tensor, distill_logits: torch.Tensor, head: str | None,
                eval_head: str) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The output of a two-headed model: ``head`` if given, else ``eval_head``, in either mode (as
    in vit-pytorch, ``pred = model(img)`` gives one tensor of logits after training too; a
    distillation loss asks for ``head="both"``)."""
    head = head or eval_head
    if head == "both":
        return logits, distill_logits
    if head == "mean":
        return (logits + distill_logits) / 2
    return logits if head == "class" else distill_logits


def has_distill_head(model: nn.Module) -> bool:
    """Whether ``model`` has a distillation head (a :class:`~vitlib.models.DistillableViT`, a LeViT
    built with ``num_distill_classes``): then ``model(x, head="both")`` gives both heads' logits."""
    return isinstance(getattr(model, "distill_head", None), nn.Module)


def check_num_classes(num_classes: int, name: str = "num_classes") -> None:
    """Raise ValueError unless ``num_classes`` is an int >= 0 (0: no classifier, as in timm)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"{name} must be an int >= 0 (0: no classifier, the model returns its pre-logits); "
                         f"received {num_classes!r}")


def classifier(in_features: int, num_classes: int, bias: bool = True, **factory) -> nn.Module:
    """A freshly initialised linear classifier of ``in_features`` into ``num_classes`` logits, or
    ``nn.Identity`` for ``num_classes=0`` (timm's convention: the model then returns its
    pre-logits). ``factory`` (``device``, ``dtype``) goes to :class:`torch.nn.Linear`."""
    check_num_classes(num_classes)
    return nn.Linear(in_features, num_classes, bias=bias, **factory) if num_classes else nn.Identity()


def model_config(**kwargs) -> dict:
    """A model's ``config``: its constructor's keyword arguments with lists turned into tuples, so
    that a model rebuilt from a checkpoint (JSON has no tuples) has an equal config."""
    def freeze(value):
        return tuple(freeze(v) for v in value) if isinstance(value, (list, tuple)) else value

    return {key: freeze(value) for key, value in kwargs.items()}


def owner_of(name: str, names) -> str | None:
    """The longest of ``names`` that is ``name`` itself or a dotted prefix of it (a module that
    holds the parameter or submodule ``name``), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in names:
            return prefix
    return None


class VisionModel(nn.Module):
    """Base of every vitlib model: the questions measuring and training code asks a model.

    Subclasses set ``config``, ``image_size`` (a ``(height, width)`` pair), ``channels``,
    ``num_classes`` and ``num_features`` (the width of the pre-logits) in their constructor, and
    define :meth:`parts`, :meth:`forward_features` and :meth:`pool_features` (or
    :meth:`forward_head`). ``head_names`` lists the attributes that classify (for
    :meth:`components`), ``classifier_names`` the dotted names of the final classifiers, those that
    :meth:`reset_classifier` replaces (built with :func:`classifier`, biased unless
    ``classifier_bias`` is False). Any module (the model included) may declare, as class
    attributes naming its own parameters, ``token_params`` (positions and learned tokens) and
    ``no_decay_params`` (other parameters that take no weight decay, such as LeViT's attention
    biases).
    """

    config: dict
    image_size: tuple[int, int]
    channels: int
    num_classes: int
    num_features: int
    head_names: tuple[str, ...] = ("head",)
    classifier_names: tuple[str, ...] = ("head",)
    classifier_bias: bool = True

    # ----- forward: timm's contract ----------------------------------------------------------

    def forward_features(self, x):  # pragma: no cover - every family defines it
        """The input to what the head reads (tokens, a feature map; each family says which)."""
        raise NotImplementedError

    def pool_features(self, features) -> torch.Tensor:  # pragma: no cover - every family defines it
        """:meth:`forward_features`' output to the pooled, normalised ``(batch, num_features)``
        vector that the classifier reads (the pre-logits)."""
        raise NotImplementedError

    def forward_head(self, features, pre_logits: bool = False) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` of :meth:`forward_features`' output, or with
        ``pre_logits=True`` the ``(batch, num_features)`` vector the classifier reads."""
        x = self.pool_features(features)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def classifiers(self) -> dict[str, nn.Module]:
        """The final classifiers by dotted name (``classifier_names``, less those the model lacks,
        such as a LeViT's absent distillation head)."""
        out = {}
        for name in self.classifier_names:
            parent, _, attr = name.rpartition(".")
            module = getattr(self.get_submodule(parent), attr, None)
            if module is not None:
                out[name] = module
        return out

    def get_classifier(self) -> nn.Module | tuple[nn.Module, ...]:
        """The final classifier (``nn.Identity`` after ``reset_classifier(0)``), or a tuple of them,
        in ``classifier_names`` order, for a model with several (a distillation head, two branches)."""
        found = tuple(self.classifiers().values())
        return found[0] if len(found) == 1 else found

    def classifier_widths(self) -> dict[str, int]:
        """The input width of each classifier by dotted name: ``num_features`` unless a family says
        otherwise (CrossViT's branches)."""
        return {name: self.num_features for name in self.classifiers()}

    def reset_classifier(self, num_classes: int) -> None:
        """Replace every final classifier by a freshly initialised one for ``num_classes`` classes
        (0: ``nn.Identity``, the model then returns its pre-logits, as timm's do), on the model's
        device and dtype, and record ``num_classes`` in ``num_classes`` and ``config``: a
        checkpoint saved afterwards rebuilds the new model."""
        check_num_classes(num_classes)
        factory = {"device": self.device, "dtype": self.dtype}
        for name, width in self.classifier_widths().items():
            parent, _, attr = name.rpartition(".")
            setattr(self.get_submodule(parent), attr, classifier(width, num_classes, self.classifier_bias, **factory))
        self.num_classes = num_classes
        self.config = {**self.config, "num_classes": num_classes}

    # ----- inputs ----------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the model's first parameter (its inputs must match it)."""
        p = next((p for p in self.parameters() if p.is_floating_point()), None)
        return torch.float32 if p is None else p.dtype

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return torch.device("cpu") if p is None else p.device

    def example_input(self, batch: int = 1, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> torch.Tensor:
        """A random batch ``(batch, channels, height, width)`` the model accepts, on ``device``
        (default: the model's) in ``dtype`` (default: the model's)."""
        device = self.device if device is None else device
        return torch.randn(batch, self.channels, *self.image_size, device=device, dtype=dtype or self.dtype)

    def check_input(self, img: torch.Tensor) -> None:
        """Raise ValueError naming what was expected when ``img`` is not a batch this model accepts."""
        check_images(img, self.channels, self.image_size, type(self).__name__, self.dtype)

    # ----- structure -------------------------------------------------------------------------

    def parts(self) -> dict[str, list[str]]:  # pragma: no cover - every family defines it
        """Named pieces of the model in forward order, each a list of qualified names of submodules
        or parameters; together they hold every parameter, and no parameter lies in two parts."""
        raise NotImplementedError

    def components(self) -> dict[str, str]:
        """Qualified names of modules and parameters mapped to the book's components:
        ``"patch embedding"``, ``"positions + tokens"``, ``"attention"``, ``"mlp"`` and ``"head"``.
        A name stands for everything inside it; whatever is not named is "other" (norms).
        Modules say what they are through a ``component`` class attribute (the shared layers
        do); the model adds its heads and its position and token parameters."""
        out: dict[str, str] = {}
        for name, mod in self.named_modules():
            kind = getattr(mod, "component", None)
            if name and kind is not None and owner_of(name, out) is None:
                out[name] = kind
        out.update({name: "positions + tokens" for name in self._declared("token_params")})
        out.update({name: "head" for name in self.head_names if getattr(self, name, None) is not None})
        return out

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that take no weight decay: biases and norms' gains (fewer than
        two dimensions), positions and learned tokens (the "positions + tokens" component) and
        whatever a module names in ``no_decay_params`` (LeViT's attention biases, per-head norm
        gains)."""
        kinds = self.components()
        tokens = {name for name, kind in kinds.items() if kind == "positions + tokens"}
        declared = self._declared("no_decay_params")
        return {name for name, p in self.named_parameters()
                if p.ndim < 2 or name in declared or owner_of(name, tokens) is not None}

    def _declared(self, attribute: str) -> set[str]:
        """Qualified names of the parameters that modules list in ``attribute``."""
        return {f"{prefix}.{p}" if prefix else p for prefix, mod in self.named_modules()
                for p in getattr(mod, attribute, ()) if getattr(mod, p, None) is not None}

    # ----- pictures --------------------------------------------------------------------------

    @torch.no_grad()
    def attention_maps(self, img, **forward_kwargs) -> list[torch.Tensor]:
        """Every attention matrix of one forward pass, in order, each ``(batch, heads, queries,
        keys)``. Runs in eval mode (no dropout) whatever mode the model is in, and restores it."""
        modes = module_modes(self)  # each module's: a submodule the caller left in eval mode stays there
        self.eval()
        try:
            with record_attention(self, maps=True) as calls:
                self(img, **forward_kwargs)
        finally:
            restore_modes(modes)
        return [call.map for call in calls]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())


class PatchClassifier(VisionModel):
    """Base of the models that embed patches, run a :class:`~vitlib.layers.Transformer` and pool.

    Subclasses set ``patch_embedding``, ``transformer``, ``head``, ``pool`` (``"cls"`` or
    ``"mean"``) and the contract's attributes, and define :meth:`embed` (patches to tokens with
    positions).
    """

    pool: str

    def embed(self, img: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """Images ``(b, c, h, w)`` to normalised tokens ``(b, tokens, dim)``."""
        return self.transformer(self.embed(img))

    def pool_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The class token (``pool="cls"``) or the mean of the tokens: ``(b, tokens, dim) -> (b, dim)``."""
        return tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)

    def parts(self) -> dict[str, list[str]]:
        embedding = ["patch_embedding", *getattr(self, "token_params", ()), "pos_embedding"]
        return {"patch embedding": list(dict.fromkeys(embedding)), "transformer": ["transformer"], "head": ["head"]}
