import pytest
import torch

from vitlib import SimpleViT
from vitlib.claims import CLAIMS, verdict_table
from vitlib.widgets import flops_explorer, measure_config, meta_breakdown, sizing_explorer


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
    split, params, tokens = meta_breakdown(SimpleViT, image_size=448, patch_size=14, num_classes=1000, dim=1024,
                                           depth=24, heads=16, mlp_dim=4096)
    assert tokens == 1024 and params > 300e6 and split["attention (scores)"] > 0


def test_measure_config_and_widgets_build():
    cfg = dict(image_size=16, patch_size=4, num_classes=3, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=32)
    figures = measure_config(SimpleViT, cfg, batch=2, min_run_time=0.01)
    assert figures["params"] > 0 and figures["gflops"] > 0 and figures["ms"] > 0
    assert len(sizing_explorer(cfg, batch=2, min_run_time=0.01).children) == 2
    assert len(flops_explorer().children) == 2
