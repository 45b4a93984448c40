"""timm's forward contract, kept by every family in vitlib.models.MODELS (and NaViTNested):
``forward(x) == forward_head(forward_features(x))``, ``forward_head(features, pre_logits=True)``,
``get_classifier()`` and ``reset_classifier(num_classes)``."""
import pytest
import torch
from torch import nn

from tests.test_contract import TINY, tiny
from vitlib.models import MODELS, NaViTNested, VisionModel
from vitlib.models.na_vit import NaViTFeatures
from vitlib.train import load_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = [*MODELS, "navit_nested"]


def build(family: str) -> VisionModel:
    if family == "navit_nested":
        torch.manual_seed(0)
        return NaViTNested(**TINY["navit"])
    return tiny(family)


def classifiers(model: VisionModel) -> tuple[nn.Module, ...]:
    found = model.get_classifier()
    return found if isinstance(found, tuple) else (found,)


def test_every_family_of_models_is_covered():
    assert set(MODELS) <= set(TINY)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_forward_is_forward_head_of_forward_features(family):
    model = build(family).eval()
    x = model.example_input(3)
    features = model.forward_features(x)
    logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, 5)
    torch.testing.assert_close(model.forward_head(features), logits)
    pre = model.forward_head(features, pre_logits=True)
    assert pre.shape == (3, model.num_features)
    # the classifiers read the pre-logits: a one-head model's logits are its classifier of them
    heads = classifiers(model)
    assert all(isinstance(h, nn.Linear) and h.out_features == 5 for h in heads)
    if len(heads) == 1:
        torch.testing.assert_close(heads[0](pre), logits)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_reset_classifier_gives_fresh_heads_of_the_new_width_and_round_trips(family, tmp_path):
    model = build(family).eval()
    x = model.example_input(2)
    pre = model.forward_head(model.forward_features(x), pre_logits=True)
    old = [h.weight.clone() for h in classifiers(model)]
    model.reset_classifier(3)
    heads = classifiers(model)
    assert all(isinstance(h, nn.Linear) and h.out_features == 3 for h in heads) and len(heads) == len(old)
    assert not any(h.weight.shape == w.shape for h, w in zip(heads, old))
    assert model.num_classes == 3 and model.config["num_classes"] == 3
    assert model(x).shape == (2, 3)
    torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), pre)
    if family != "navit_nested":  # NaViTNested is no family of its own: checkpoints rebuild MODELS' classes
        again = load_model(save_checkpoint(tmp_path / "three.safetensors", model))
        assert again.config == model.config and again.num_classes == 3
        torch.testing.assert_close(again(x), model(x))
    # no classes: no classifier, and the model returns its pre-logits (timm's convention)
    model.reset_classifier(0)
    assert all(isinstance(h, nn.Identity) for h in classifiers(model))
    assert model.num_classes == 0 and model.config["num_classes"] == 0
    torch.testing.assert_close(model(x), pre)
    if family != "navit_nested":
        again = load_model(save_checkpoint(tmp_path / "none.safetensors", model))
        assert again.num_classes == 0 and all(isinstance(h, nn.Identity) for h in classifiers(again))
        torch.testing.assert_close(again(x), pre)
    model.reset_classifier(4)  # and back from none: the widths come from the model, not the old head
    assert model(x).shape == (2, 4)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10", None])
def test_reset_classifier_names_what_it_expects(bad):
    model = tiny("vit")
    with pytest.raises(ValueError, match=rf"num_classes must be an int >= 0 .*received {bad!r}"):
        model.reset_classifier(bad)
    assert model.num_classes == 5 and model.head.out_features == 5


def test_reset_classifier_keeps_device_dtype_and_bias_rules():
    vit = tiny("vit").to(torch.float64)
    vit.reset_classifier(2)
    assert vit.head.weight.dtype == torch.float64 and vit.head.bias is not None
    first = vit.head.weight.clone()
    vit.reset_classifier(2)
    assert not torch.equal(vit.head.weight, first)  # freshly initialised, not the old weights kept
    navit = tiny("navit")
    navit.reset_classifier(2)
    assert navit.head.bias is None  # NaViT's classifier is bias-free, before and after
    with torch.device("meta"):
        meta = MODELS["vit"](**TINY["vit"])
    meta.reset_classifier(2)
    assert meta.head.weight.device.type == "meta"


def test_levit_with_a_distillation_head_resets_both_heads(tmp_path):
    torch.manual_seed(0)
    model = MODELS["levit"](**{**TINY["levit"], "num_distill_classes": 7}).eval()
    x = model.example_input(2)
    assert model.eval_head == "both"  # the class counts differ: nothing to average
    model.reset_classifier(3)
    assert model.head.out_features == model.distill_head.out_features == 3
    assert model.config["num_distill_classes"] == 3 and model.eval_head == "mean"
    with torch.no_grad():
        a, b = model(x, head="both")
        torch.testing.assert_close(model(x), (a + b) / 2)
        features = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(features, head="both")[1], b)
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), features.mean(dim=(-2, -1)))
    model.reset_classifier(0)
    again = load_model(save_checkpoint(tmp_path / "none.safetensors", model))
    assert again.config["num_distill_classes"] == 0 and isinstance(again.distill_head, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(again(x), features.mean(dim=(-2, -1)))


def test_distillable_vit_pre_logits_are_deits():
    model = tiny("distillable_vit").eval()
    x = model.example_input(2)
    with torch.no_grad():
        tokens = model.forward_features(x)
        pre = model.forward_head(tokens, pre_logits=True)
        torch.testing.assert_close(pre, (tokens[:, 0] + tokens[:, -1]) / 2)  # class and distillation tokens
        a, b = model.forward_head(tokens, head="both")
        torch.testing.assert_close(a, model.head(tokens[:, 0]))
        torch.testing.assert_close(b, model.distill_head(tokens[:, -1]))


def test_heads_refuse_what_forward_features_does_not_return():
    cross = tiny("cross_vit").eval()
    x = cross.example_input(2)
    sm, _ = cross.forward_features(x)
    with pytest.raises(ValueError, match=r"expects forward_features' output, a pair .*received a Tensor of shape"):
        cross.forward_head(sm)
    navit = tiny("navit").eval()
    features = navit.forward_features(navit.example_input(2))
    assert isinstance(features, NaViTFeatures) and features.tokens.ndim == 3
    with pytest.raises(ValueError, match=r"expects forward_features' output, a NaViTFeatures .*received Tensor"):
        navit.forward_head(features.tokens)
