"""Chapter 3's experiments: the stem as an affine map, the stem's share, attention per stage."""
import pytest

from vitlib.book.studies import levit as study


def test_a_stem_without_nonlinearity_is_one_affine_map():
    assert study.affine_deviation(stem_activation=False) < 1e-5
    assert study.affine_deviation(stem_activation=True) > 1e-2


def test_paper_stem_widths_cost_less_than_vit_pytorchs():
    shares = study.stem_share("LeViT-128S", image_size=224).set_index("stem")
    paper, vp = shares.iloc[0], shares.loc["vit-pytorch"]
    assert paper["widths"] == "16, 32, 64" and vp["widths"] == "32, 64, 128"
    assert paper["stem_gflops"] < vp["stem_gflops"] / 2
    assert 0 < paper["share"] < vp["share"] < 1


@pytest.mark.slow
def test_attention_stays_quadratic_in_every_stage():
    sweep, slopes = study.attention_sweep([128, 256, 512])
    assert set(sweep["part"]) == {*study.STAGES, "ViT-B/16 (all layers)"}
    assert all(1.8 < s < 2.2 for s in slopes.values()), slopes
    with pytest.raises(ValueError, match="at least two image sizes"):
        study.attention_sweep([224])


def test_preset_table_counts_beside_the_paper():
    table = study.preset_table(["LeViT-128S"], extra=())
    row = table.iloc[0]
    assert row["model"] == "LeViT-128S" and row["paper_params_m"] == 7.8
    assert abs(row["gmacs"] / row["paper_gmacs"] - 1) < 0.15
