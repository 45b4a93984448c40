"""Attention sizes and per-part tables (LeViT stages, CrossViT branches) in vitlib.bench."""
import math

import pytest
import torch

from vitlib import CrossViT, LeViT, ViT, bench
from vitlib.models import presets

pytestmark = pytest.mark.usefixtures("one_thread")

LEVIT = dict(image_size=64, num_classes=10, dim=(16, 24, 32), depth=(1, 2, 1), heads=(2, 3, 4), mlp_mult=2,
             dim_key=8, dim_value=8)
CROSS = dict(image_size=24, num_classes=10, sm_dim=16, lg_dim=32, sm_patch_size=4, lg_patch_size=8, sm_enc_depth=1,
             sm_enc_heads=2, sm_enc_mlp_dim=32, sm_enc_dim_head=8, lg_enc_depth=2, lg_enc_heads=2, lg_enc_mlp_dim=64,
             lg_enc_dim_head=8, cross_attn_depth=1, cross_attn_heads=2, cross_attn_dim_head=8, depth=2, dropout=0.0,
             emb_dropout=0.0)


def test_attention_entries_of_a_vit_are_heads_times_tokens_squared():
    model = ViT(image_size=16, patch_size=4, num_classes=10, dim=32, depth=3, heads=2, dim_head=16, mlp_dim=64)
    rows = bench.attention_entries(model, torch.randn(1, 3, 16, 16))
    assert len(rows) == 3
    assert all(r["queries"] == r["keys"] == 17 and r["entries"] == 2 * 17 * 17 for r in rows)


def test_levit_entries_follow_the_maps_and_shrinking_attention():
    model = LeViT(**LEVIT).eval()
    rows = bench.attention_entries(model, torch.randn(1, 3, 64, 64))
    # stage 1 on 4x4 (1 block), shrink 4x4 -> 2x2 (twice the heads), stage 2 on 2x2 (2 blocks), shrink -> 1x1, stage 3
    expected = [(2, 16, 16), (4, 4, 16), (3, 4, 4), (3, 4, 4), (6, 1, 4), (4, 1, 1)]
    assert [(r["heads"], r["queries"], r["keys"]) for r in rows] == expected
    assert all(r["entries"] == r["heads"] * r["queries"] * r["keys"] for r in rows)


def test_crossvit_cross_attention_has_one_query_and_linear_keys():
    model = CrossViT(**CROSS).eval()
    rows = bench.attention_entries(model, torch.randn(1, 3, 24, 24))
    cross = [r for r in rows if "attend" in r["module"]]
    sm_tokens, lg_tokens = (24 // 4) ** 2, (24 // 8) ** 2
    assert len(cross) == 2 * 2  # depth 2, one block each way
    for r in cross:
        other = lg_tokens if "sm_attend_lg" in r["module"] else sm_tokens
        assert (r["queries"], r["keys"]) == (1, 1 + other)
    encoders = [r for r in rows if "encoder" in r["module"]]
    assert {r["keys"] for r in encoders} == {1 + sm_tokens, 1 + lg_tokens}


def test_levit_components_are_counted():
    model = LeViT(**LEVIT).eval()
    x = torch.randn(1, 3, 64, 64)
    split = bench.flops_by_component(model, x)
    assert split["other"] == 0
    assert split["patch embedding"] > 0 and split["attention (scores)"] > 0 and split["mlp"] > 0
    assert sum(split.values()) == bench.count_flops(model, x)
    params = bench.parameters_by_component(model)
    assert params["patch embedding"] == sum(p.numel() for p in model.stem.parameters())


def test_levit_part_table_covers_the_model():
    model = LeViT(**LEVIT).eval()
    x = torch.randn(2, 3, 64, 64)
    df = bench.part_table(model, x, timing=True, rounds=1, min_run_time=0.01)
    assert list(df.index) == ["stem", "stage 1", "shrink 1->2", "stage 2", "shrink 2->3", "stage 3", "head"]
    assert list(df["tokens"][:-1]) == [16, 16, 4, 4, 1, 1]
    assert math.isclose(df["gflops"].sum(), bench.count_flops(model, x[:1]) / 1e9, rel_tol=1e-9)
    entries = sum(r["entries"] for r in bench.attention_entries(model, x[:1]))
    assert df["attention_entries"].sum() == entries
    assert (df["median_ms"] > 0).all() and math.isclose(df["time_share"].sum(), 1.0)
    assert df["params"].sum() == bench.count_parameters(model)


def test_crossvit_parts_cover_the_model_and_cross_attention_is_linear():
    def table(size):
        model = CrossViT(**{**CROSS, "image_size": size}).eval()
        x = torch.randn(1, 3, size, size)
        df = bench.part_table(model, x)
        assert math.isclose(df["gflops"].sum(), bench.count_flops(model, x) / 1e9, rel_tol=1e-9)
        assert df["params"].sum() == bench.count_parameters(model)
        return df

    small, large = table(24), table(48)  # 4x the tokens in each branch
    ratio = large["attention_entries"] / small["attention_entries"]
    assert ratio["cross-attention"] < 4.5  # (1 + 4n) / (1 + n): linear
    assert ratio["small-patch branch"] > 12  # (1 + 4n)^2 / (1 + n)^2: quadratic


def test_part_table_rejects_a_name_not_in_the_model():
    model = LeViT(**LEVIT).eval()
    with pytest.raises(ValueError, match="names 'backbone.9', which is neither a submodule nor a parameter of LeViT"):
        bench.part_table(model, torch.randn(1, 3, 64, 64), {"x": ["backbone.9"]})


@pytest.mark.slow
def test_meta_parts_equal_a_real_run_and_explorers_build():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitlib.book import widgets

    meta = widgets.meta_parts("LeViT-128S", image_size=64)
    model = presets.create("LeViT-128S", image_size=64).eval()
    real = bench.part_table(model, torch.randn(1, 3, 64, 64))
    assert meta["gflops"].tolist() == pytest.approx(real["gflops"].tolist())
    assert meta["attention_entries"].tolist() == real["attention_entries"].tolist()
    fig, axes = plt.subplots(1, 2)
    widgets.plot_parts(axes, meta, "t")
    assert len(axes[1].patches) == 2 * len(meta)  # scores and the rest, one bar each per part
    plt.close(fig)
    assert widgets.levit_stage_explorer(image_size=128) is not None
    assert widgets.crossvit_explorer(image_size=96) is not None
