"""What the patch-token classifiers (ViT, SimpleViT, ...) share: checks, pooling, attention maps."""
from __future__ import annotations

import torch
from torch import nn


def check_positive(**values: int) -> None:
    """Raise ValueError naming every hyperparameter that is not a positive int."""
    bad = {k: v for k, v in values.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"expected positive ints; received {', '.join(f'{k}={v!r}' for k, v in bad.items())}")


def check_probability(**values: float) -> None:
    bad = {k: v for k, v in values.items() if not 0.0 <= float(v) < 1.0}
    if bad:
        raise ValueError(f"expected probabilities in [0, 1); received {', '.join(f'{k}={v!r}' for k, v in bad.items())}")


class PatchClassifier(nn.Module):
    """Base of the models that embed patches, run a :class:`~vitlib.layers.Transformer` and pool.

    Subclasses set ``patch_embedding``, ``transformer``, ``head``, ``pool`` (``"cls"`` or ``"mean"``)
    and ``config`` (the constructor's keyword arguments, enough to rebuild the model), and define
    :meth:`embed` (patches to tokens with positions).
    """

    config: dict
    pool: str

    def embed(self, img: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """Images ``(b, c, h, w)`` to normalised tokens ``(b, tokens, dim)``."""
        return self.transformer(self.embed(img))

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pool tokens (class token or mean) and classify: ``(b, tokens, dim) -> (b, num_classes)``."""
        x = tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)
        return self.head(x)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(img))

    @torch.no_grad()
    def attention_maps(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer attention matrices, each ``(b, heads, tokens, tokens)``, from the plain path."""
        _, maps = self.transformer(self.embed(img), return_attn=True)
        return maps

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())
