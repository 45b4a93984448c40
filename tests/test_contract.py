"""The contract every model family keeps (vitlib.models.base.VisionModel), tested the same way for
all: the papers' presets on the meta device, and a tiny model of each family for real."""
import pytest
import torch

from vitlib import bench
from vitlib.models.base import owner_of
from vitlib.models import MODELS, NaViT, VisionModel, presets
from vitlib.train import load_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

# A small model of every family (and NaViT), cheap enough to run, save and time in a test.
TINY = {
    "vit": dict(image_size=16, patch_size=4, num_classes=5, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=48,
                dropout=0.1, emb_dropout=0.1),
    "simple_vit": dict(image_size=16, patch_size=4, num_classes=5, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=48),
    "levit": dict(image_size=32, num_classes=5, dim=(16, 24, 32), depth=1, heads=(2, 3, 4), mlp_mult=2, dim_key=8,
                  dim_value=8),
    "cross_vit": dict(image_size=16, num_classes=5, sm_dim=16, lg_dim=32, sm_patch_size=2, lg_patch_size=4,
                      sm_enc_heads=2, sm_enc_mlp_dim=32, sm_enc_dim_head=8, lg_enc_depth=1, lg_enc_heads=2,
                      lg_enc_mlp_dim=64, lg_enc_dim_head=8, cross_attn_depth=1, cross_attn_heads=2,
                      cross_attn_dim_head=8, depth=1),
    "navit": dict(image_size=16, patch_size=4, num_classes=5, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=48,
                  token_dropout_prob=0.25),
    "distillable_vit": dict(image_size=16, patch_size=4, num_classes=5, dim=32, depth=2, heads=2, dim_head=16,
                            mlp_dim=48, dropout=0.1, emb_dropout=0.1),
    "resnet": dict(image_size=16, num_classes=5, layers=(1, 1), widths=(8, 16)),
}
NO_ATTENTION = {"resnet"}  # the convolutional teacher
CLASSES = {**MODELS, "navit": NaViT}


def heads_of(out) -> tuple:
    """A model's output as a tuple: one tensor, or a distillation student's two heads (training)."""
    return tuple(out) if isinstance(out, tuple) else (out,)


def tiny(family: str) -> VisionModel:
    torch.manual_seed(0)
    return CLASSES[family](**TINY[family])


def test_every_family_has_a_tiny_model():
    assert set(CLASSES) == set(TINY)


def check_parts_cover(model: VisionModel) -> None:
    parts = model.parts()
    names = [n for group in parts.values() for n in group]
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    assert all(n in params or n in modules for n in names), names
    for name in params:
        owners = [label for label, group in parts.items() if owner_of(name, group) is not None]
        assert len(owners) == 1, f"{type(model).__name__}: parameter {name} lies in parts {owners}"


# ----- the papers' models, built on the meta device ----------------------------------------------


@pytest.mark.parametrize("name", presets.names())
def test_preset_builds_on_meta_and_keeps_the_contract(name):
    preset = presets.get(name)
    with torch.device("meta"):
        model = presets.create(name)
    assert isinstance(model, VisionModel) and type(model) is MODELS[preset.family]
    assert model.num_classes == 1000 and model.channels == 3
    x = model.example_input(2)
    assert x.device.type == "meta" and x.shape == (2, 3, *model.image_size)
    assert all(out.shape == (2, 1000) for out in heads_of(model(x)))
    check_parts_cover(model)
    assert set(model.components().values()) <= {"patch embedding", "positions + tokens", "attention", "mlp", "head"}
    assert model.no_weight_decay() <= set(dict(model.named_parameters()))
    # a rebuilt model from its config is the same model
    with torch.device("meta"):
        again = type(model)(**model.config)
    assert bench.count_parameters(again) == bench.count_parameters(model)


def test_preset_names_are_case_insensitive_and_overridable():
    with torch.device("meta"):
        model = presets.create("vit-b/16", num_classes=10, image_size=64)
    assert model.num_classes == 10 and model.image_size == (64, 64)
    assert presets.config("ViT-B/16")["dim"] == 768
    assert presets.names("levit") == ["LeViT-128S", "LeViT-128", "LeViT-192", "LeViT-256", "LeViT-384"]
    with pytest.raises(ValueError, match=r"no preset named 'ViT-Q/16'; expected one of \['ViT-Ti/16'"):
        presets.get("ViT-Q/16")
    # a branch's size given replaces the preset's scale for it; given both, the model refuses
    assert "lg_image_scale" in presets.config("CrossViT-S")
    assert "lg_image_scale" not in presets.config("CrossViT-S", lg_image_size=240)
    assert presets.build_meta("CrossViT-S", lg_image_size=240).lg_image_size == (240, 240)
    with pytest.raises(ValueError, match="give lg_image_size or lg_image_scale, not both"):
        presets.build_meta("CrossViT-S", lg_image_size=240, lg_image_scale=0.5)


def test_vit_b_16_has_the_papers_size():
    with torch.device("meta"):
        model = presets.create("ViT-B/16")
    paper = presets.get("ViT-B/16")
    assert abs(bench.count_parameters(model) / 1e6 / paper.paper_params_m - 1) < 0.01  # 86.5M against 86M
    # FLOPs count a multiply-add as two: 2 x 17.6 G multiply-adds, within the head and the embedding
    assert abs(bench.count_flops(model, model.example_input(1)) / 2e9 - paper.paper_gmacs) < 0.1


# ----- a tiny model of each family, for real ------------------------------------------------------


@pytest.mark.parametrize("family", TINY)
def test_forward_and_example_input(family):
    model = tiny(family)
    x = model.example_input(3)
    assert all(out.shape == (3, 5) for out in heads_of(model(x)))
    assert model.eval()(x).shape == (3, 5)  # in eval mode one tensor of logits, whatever the heads
    assert model.num_classes == 5 and model.config == {**model.config, **TINY[family]}


def bad_batches(model: VisionModel):
    """Wrong inputs a new user tries, each with what the error must name (fixed-size families)."""
    (h, w), c = model.image_size, model.channels
    return [
        (torch.randn(2, c, h // 2, w // 2), rf"expects images of {h}x{w} pixels.*received {h // 2}x{w // 2}"),
        (torch.randn(2, c, 2 * h, 2 * w), rf"expects images of {h}x{w} pixels.*received {2 * h}x{2 * w}"),
        (torch.randn(2, c, h, w - 4), rf"expects images of {h}x{w} pixels.*received {h}x{w - 4}"),
        (torch.randn(2, 1, h, w), rf"expects {c} channels.*received 1 channels"),
        (torch.randn(c, h, w), rf"received a 3-D tensor of shape \({c}, {h}, {w}\).*unsqueeze"),
        (torch.randn(1, 2, c, h, w), r"received a 5-D tensor"),
        (torch.randint(0, 255, (2, c, h, w), dtype=torch.uint8), r"received dtype torch.uint8"),
        (torch.randn(2, c, h, w, dtype=torch.float64), r"torch.float32 weights and expects torch.float32 images; received "
                                                        r"dtype torch.float64"),
    ]


@pytest.mark.parametrize("family", sorted(set(TINY) - {"navit"}))
def test_bad_input_names_what_was_expected_and_received(family):
    model = tiny(family).eval()
    (h, w), c = model.image_size, model.channels
    for bad, pattern in bad_batches(model):
        with pytest.raises(ValueError, match=pattern) as err:
            model(bad)
        assert type(model).__name__ in str(err.value)
        assert "expects" in str(err.value) and (f"(batch, {c}, {h}, {w})" in str(err.value) or "float64" in pattern)
        with pytest.raises(ValueError, match=pattern):
            model.check_input(bad)


def test_navit_bad_input_names_what_was_expected_and_received():
    """NaViT takes a list of images of any size up to its own (its list-specific errors: test_navit)."""
    model = tiny("navit").eval()
    x = model.example_input(2)
    for bad, received in [([torch.randn(3, 17, 16)], "received"), ([img.double() for img in x], "torch.float64"),
                          ([img[:1] for img in x], "received 1")]:
        with pytest.raises(ValueError, match="expects") as err:
            model(bad)
        assert received in str(err.value)
        with pytest.raises(ValueError):
            model.check_input(bad)


@pytest.mark.parametrize("family", TINY)
def test_parts_cover_the_model(family):
    check_parts_cover(tiny(family))


@pytest.mark.parametrize("family", TINY)
def test_checkpoint_round_trip(family, tmp_path):
    model = tiny(family).eval()
    x = model.example_input(2)
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    again = load_model(path)
    assert type(again) is type(model) and again.config == model.config and not again.training
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


@pytest.mark.parametrize("family", TINY)
def test_attention_maps_in_eval_mode_whatever_the_mode(family):
    model = tiny(family).train()
    x = model.example_input(2)
    maps = model.attention_maps(x)
    assert model.training and len(maps) == len(bench.attention_entries(model, x))
    assert (len(maps) == 0) is (family in NO_ATTENTION)
    again = model.attention_maps(x)  # eval mode: no dropout, no token dropout, so the same maps
    assert all(torch.equal(a, b) for a, b in zip(maps, again))
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:-1]))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("family", TINY)
def test_measuring_leaves_the_model_in_its_mode(family, mode):
    model = tiny(family).train(mode == "train")
    x = model.example_input(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = [
        lambda: bench.count_flops(model, x),
        lambda: bench.flops_by_component(model, x),
        lambda: bench.attention_entries(model, x),
        lambda: bench.parameters_by_component(model),
        lambda: model.attention_maps(x),
        lambda: bench.measure_inference(model, x, min_run_time=0.001, warmup=1),
        lambda: bench.compare({"m": (model, x)}, mode="inference", rounds=1, min_run_time=0.001, warmup=1),
        lambda: bench.compare({"m": (model, x)}, mode="train", rounds=1, min_run_time=0.001, warmup=1),
    ]
    if family != "navit":  # part tables slice a batch tensor
        calls.append(lambda: bench.part_table(model, x, timing=True, rounds=1, min_run_time=0.001))
    for call in calls:
        call()
        assert model.training is (mode == "train")
        for module in model.modules():
            assert module.training is (mode == "train")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a measurement changed the model's state"


@pytest.mark.parametrize("family", TINY)
def test_no_weight_decay_names_positions_tokens_and_gains(family):
    model = tiny(family)
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert all(params[n].ndim < 2 for n in params if n.endswith(".bias")) and {
        n for n in params if n.endswith(".bias")} <= names
    decayed = set(params) - names
    assert decayed and all(params[n].ndim >= 2 for n in decayed)
    components = model.components()
    for name in params:
        owner = owner_of(name, components)
        if owner is not None and components[owner] == "positions + tokens":
            assert name in names, f"{name} holds positions or tokens but takes weight decay"


def test_levit_attention_biases_take_no_weight_decay():
    model = tiny("levit")
    biases = {n for n, _ in model.named_parameters() if n.endswith("attention_biases")}
    assert biases and biases <= model.no_weight_decay()
