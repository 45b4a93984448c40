import pytest

from vitlib.book import widgets
from vitlib.bench import comparison
from vitlib.book.claims import CLAIMS, verdict_table
from vitlib.book.studies.lightweight import compare_configs
from vitlib.models.presets import sizing_config
from vitlib.book.widgets import flops_explorer, meta_breakdown, sizing_explorer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_claims_are_numbered_c1_to_c15():
    assert list(CLAIMS) == [f"C{i}" for i in range(1, 16)]


def test_verdict_table_checks_ids_and_verdicts():
    table = verdict_table([{"id": "C2", "measured": "14.70M vs 14.74M", "verdict": "does not hold: 0.25%"}])
    html = table.to_html()
    assert "40% fewer parameters" in html and "does not hold" in html
    with pytest.raises(ValueError, match="unknown claim id 'C99'"):
        verdict_table([{"id": "C99", "measured": "", "verdict": "holds"}])
    with pytest.raises(ValueError, match="received 'maybe'"):
        verdict_table([{"id": "C1", "measured": "", "verdict": "maybe"}])


def test_meta_breakdown_needs_no_memory():
    split, params, tokens = meta_breakdown("SimpleViT-S/16", image_size=448, patch_size=14, dim=1024, depth=24,
                                           heads=16, dim_head=64, mlp_dim=4096)
    assert tokens == 1024 and params > 300e6 and split["attention (scores)"] > 0
    split, params, tokens = meta_breakdown("ViT-B/16")
    assert tokens == 197 and abs(params / 86.6e6 - 1) < 0.01


CFG = dict(image_size=16, patch_size=4, num_classes=3, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=32)


def test_compare_configs_and_widgets_build():
    table = compare_configs(CFG, sizing_config(CFG, dim=64), batch=2, rounds=1, min_run_time=0.01)
    for row in ("base", "variant"):
        assert table.loc[row, "params"] > 0 and table.loc[row, "gflops"] > 0 and table.loc[row, "median_ms"] > 0
    assert table.loc["variant", "params"] > table.loc["base", "params"]
    assert table.loc["base", "time_ratio"] == 1.0
    assert len(sizing_explorer(CFG, batch=2, rounds=1, min_run_time=0.01).children) == 3
    assert len(flops_explorer().children) == 2


def test_heads_split_the_width():
    """One meaning of "heads": the inner width heads x dim_head stays dim."""
    assert sizing_config(CFG, heads=4) == {**CFG, "heads": 4, "dim_head": 8}
    assert sizing_config(CFG, dim=64)["dim_head"] == 32
    assert sizing_config(CFG, heads=4, dim_head=16)["dim_head"] == 16  # asked for explicitly: kept
    assert sizing_config(CFG, depth=3)["dim_head"] == 16
    with pytest.raises(ValueError, match="dim must be a multiple of heads.*received dim=32, heads=3"):
        sizing_config(CFG, heads=3)


def test_sizing_explorer_measures_base_and_variant_in_one_interleaved_call(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    timed, variants = [], []
    interleaved = comparison.time_interleaved
    measure = widgets.lightweight.compare_configs

    def spy_time(fns, **kwargs):
        timed.append(set(fns))
        return interleaved(fns, **kwargs)

    def spy_compare(base, variant, **kwargs):
        variants.append(variant)
        return measure(base, variant, **kwargs)

    monkeypatch.setattr(comparison, "time_interleaved", spy_time)
    monkeypatch.setattr(widgets.lightweight, "compare_configs", spy_compare)
    box = sizing_explorer(CFG, batch=2, rounds=1, min_run_time=0.01)
    sliders = {c.description: c for column in box.children[0].children for c in column.children}
    sliders["heads"].value = 4
    assert variants[-1]["heads"] == 4 and variants[-1]["dim_head"] == 8  # the width is split, not grown
    assert timed and all(keys == {"base", "variant"} for keys in timed)
