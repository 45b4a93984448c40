"""Chapter 2's experiments: knob sweeps, the profile of a training step, one more token, seeds."""
import pytest
import torch

from vitlib import SimpleViT, ViT
from vitlib import train as vtrain
from vitlib.book.claims import Measured
from vitlib.book.studies import lightweight

TINY = dict(image_size=8, patch_size=4, num_classes=3, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64,
            channels=1)


@pytest.mark.slow
def test_knob_sweep_times_every_setting_against_the_base_in_one_run():
    knobs = {"depth": [dict(depth=2)], "mlp_dim": [dict(mlp_dim=32), dict(mlp_dim=128)]}
    sweep = lightweight.knob_sweep(SimpleViT, TINY, knobs, batch=2, rounds=1, min_run_time=0.01)
    assert list(sweep["knob"][:4]) == ["base", "depth", "mlp_dim", "mlp_dim"]
    assert sweep.loc[0, "params_x"] == sweep.loc[0, "time_x"] == 1.0
    assert (sweep["time_x_low"] <= sweep["time_x"]).all() and (sweep["time_x"] <= sweep["time_x_high"]).all()
    deeper = sweep[(sweep["knob"] == "depth") & (sweep["value"] == 2)].iloc[0]
    assert deeper["gflops_x"] > 1.5 and deeper["params_x"] > 1.5
    # the base appears once more under each knob, at its own value
    repeats = sweep[sweep["is_base"] & (sweep["knob"] != "base")]
    assert sorted(zip(repeats["knob"], repeats["value"])) == [("depth", 1), ("mlp_dim", 64)]
    with pytest.raises(ValueError, match="must change 'depth'"):
        lightweight.knob_sweep(SimpleViT, TINY, {"depth": [dict(dim=64)]}, batch=2)


def test_profile_of_a_training_step_sees_dropout_and_the_unfused_attention():
    x = torch.randn(4, 1, 8, 8)
    torch.manual_seed(0)
    with_dropout = lightweight.profile_train_step(ViT(**TINY, dropout=0.1, emb_dropout=0.1), x, steps=2, top=5)
    without = lightweight.profile_train_step(ViT(**TINY), x, steps=2, top=5)
    assert len(with_dropout) == 5 and with_dropout["share"].between(0, 1).all()
    assert with_dropout.attrs["dropout_share"] > 0 and without.attrs["dropout_share"] == 0
    assert with_dropout.attrs["dropout_ms"] > 0 and without.attrs["dropout_ms"] == 0
    assert with_dropout.attrs["ops_per_step"] > without.attrs["ops_per_step"]
    assert without.attrs["fused_attention"] and not with_dropout.attrs["fused_attention"]
    with pytest.raises(ValueError, match="steps must be at least 1"):
        lightweight.profile_train_step(ViT(**TINY), x, steps=0)


def test_one_more_token_returns_ratios_with_their_spread():
    extra = lightweight.one_more_token(32, 2, 16, 64, 4, batch=2, rounds=1, min_run_time=0.01)
    assert set(extra) == {"attention", "mlp"}
    assert all(isinstance(m, Measured) and m.n >= 5 and m.low <= m.value <= m.high for m in extra.values())
    with pytest.raises(ValueError, match="tokens must be at least 1"):
        lightweight.one_more_token(32, 2, 16, 64, 0)


@pytest.mark.slow
def test_train_seeds_gives_one_row_per_model_and_seed():
    from vitlib.data import load_dataset
    from vitlib.train import QUICK_RECIPE

    data = load_dataset("digits", image_size=8)
    recipe = {**QUICK_RECIPE, "model": {**QUICK_RECIPE["model"], "dim": 16, "depth": 1, "mlp_dim": 32}}
    runs = vtrain.train_seeds(recipe, {"ViT": ("vit", {}), "SimpleViT": ("simple_vit", {})}, [0, 1],
                                   data=data, epochs=1, progress=False)
    assert list(runs["condition"]) == ["ViT", "SimpleViT", "ViT", "SimpleViT"]
    assert runs["accuracy"].between(0, 1).all() and (runs["wall_s"] > 0).all()
    assert runs.attrs["test_size"] == len(data.test) and len(runs.attrs["histories"]) == 4
    with pytest.raises(ValueError, match="at least one seed"):
        vtrain.train_seeds(recipe, {"ViT": ("vit", {})}, [], data=data)
