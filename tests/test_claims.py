"""The one verdict function and the measured values it judges."""
import pytest

from vitlib.book.claims import Measured, verdict


def test_ratio_from_interleaved_times():
    slow = [2.0, 2.1, 1.9, 2.0, 2.2]
    fast = [1.0, 1.05, 0.95, 1.0, 1.1]
    r = Measured.ratio(slow, fast)
    assert r.value == pytest.approx(2.0)
    assert r.low < r.value < r.high and r.n == 5
    assert "2.00x" in str(r) and "5 timings a side" in r.how
    assert Measured.ratio([3.0, 3.0], [1.0, 1.0, 1.0], what="epochs").how.endswith("2 and 3 epochs")


def test_two_ratios_in_a_row_multiply_their_bounds():
    a, b = Measured(2.0, 1.5, 2.5, 5), Measured(3.0, 2.0, 4.0, 7)
    c = a.chain(b)
    assert (c.value, c.low, c.high, c.n, c.unit) == (6.0, 3.0, 10.0, 5, "x")
    assert c.low <= c.value <= c.high and "at least 5 timings a side" in c.how
    # the chain of two measured ratios is the ratio of the ends when nothing spreads
    ab, bc = Measured.ratio([4.0] * 5, [2.0] * 5), Measured.ratio([2.0] * 5, [0.5] * 5)
    assert ab.chain(bc).value == Measured.ratio([4.0] * 5, [0.5] * 5).value == 8.0


def test_paired_ratio_is_the_median_of_the_pairs_with_their_extremes():
    m = Measured.paired_ratio([2.0, 4.0, 3.0], [1.0, 2.0, 3.0], "seeds")
    assert (m.value, m.low, m.high, m.n) == (2.0, 1.0, 2.0, 3) and m.how == "lowest to highest of 3 seeds"
    with pytest.raises(ValueError, match="one measurement a side per pair"):
        Measured.paired_ratio([1.0, 2.0], [1.0])


def test_to_dict_as_json_or_as_a_tables_columns():
    m = Measured(2.0, 1.0, 3.0, 5)
    assert m.to_dict() == {"value": 2.0, "low": 1.0, "high": 3.0, "n": 5}
    assert m.to_dict(1e3, prefix="ms") == {"ms": 2000.0, "ms_low": 1000.0, "ms_high": 3000.0}


@pytest.mark.parametrize("low,high,expected", [
    (1.30, 1.40, "holds"), (1.10, 1.20, "does not hold"), (1.20, 1.30, "inconclusive on this machine"),
])
def test_verdict_against_a_threshold(low, high, expected):
    m = Measured((low + high) / 2, low, high, 5)
    assert verdict(m, 1.25) == expected


def test_verdict_at_most():
    loss = Measured(0.5, 0.2, 0.8, 3, "pt")
    assert verdict(loss, 1.0, at_least=False) == "holds"
    assert verdict(loss, 0.1, at_least=False) == "does not hold"
    assert verdict(loss, 0.5, at_least=False) == "inconclusive on this machine"


def test_verdict_by_condition():
    rates = {"rate 0.1": Measured(1.1, 1.05, 1.15, 5), "rate 0.3": Measured(1.5, 1.4, 1.6, 5)}
    assert verdict(rates, 1.25) == "holds only when rate 0.3"
    assert verdict(rates, 1.0) == "holds"
    assert verdict(rates, 2.0) == "does not hold"
    rates["rate 0.2"] = Measured(1.25, 1.2, 1.3, 5)
    assert verdict(rates, 1.25) == "holds only when rate 0.3 (inconclusive for rate 0.2)"
    assert verdict(rates, 1.25, because="x").endswith(": x")
    # missed under some conditions, the others straddling: it does not hold there, and says where
    mixed = {"rate 0.1": Measured(1.1, 1.05, 1.15, 5), "rate 0.3": Measured(1.3, 1.2, 1.4, 5)}
    assert verdict(mixed, 1.25) == "does not hold for rate 0.1 (inconclusive for rate 0.3)"
    assert verdict({"a": Measured(1.3, 1.2, 1.4, 5), "b": Measured(1.3, 1.2, 1.4, 5)}, 1.25) == \
        "inconclusive on this machine"


def test_accuracy_difference_carries_test_set_and_seed_uncertainty():
    d = Measured.difference([0.90, 0.91, 0.89], [0.92, 0.93, 0.91], test_size=360)
    assert d.value == pytest.approx(2.0) and d.unit == "pt" and d.n == 3
    # binomial error on 360 images dominates: 2 * sqrt((.9*.1 + .92*.08) / 360) = 4.3 pt
    assert d.high - d.value == pytest.approx(200 * ((0.9 * 0.1 + 0.92 * 0.08) / 360) ** 0.5, rel=1e-6)
    assert verdict(d, 0.0) == "inconclusive on this machine"  # +2 pt is within the noise of 360 images
    with pytest.raises(ValueError, match="one accuracy per seed"):
        Measured.difference([0.9], [0.9, 0.8], 100)


def test_exact_values_have_no_spread():
    m = Measured.exact(0.0025)
    assert m.low == m.high == m.value
    assert verdict(m, 0.4) == "does not hold"


def test_verdict_needs_a_measurement():
    with pytest.raises(ValueError, match="at least one measurement"):
        verdict({}, 1.0)


def test_verdict_table_records_the_chapter(tmp_path, monkeypatch):
    import torch

    from vitlib.book import results
    from vitlib.book import BookSetup
    from vitlib.book.claims import verdict_table

    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    setup = BookSetup(device=torch.device("cpu"), mode="quick", seed=0, threads=1, reason="test")
    rows = [{"id": "C2", "measured": "14.70M vs 14.74M", "verdict": "does not hold: 0.25%"}]
    verdict_table(rows, chapter="02_lightweight_models", setup=setup)
    saved = results.load("02_lightweight_models")
    assert saved["claims"] == rows and saved["mode"] == "quick" and saved["provenance"]["device"] == "cpu"
    assert list(results.load_all()) == ["02_lightweight_models"] and results.load("03_levit") is None
    rows[0]["verdict"] = "holds"
    verdict_table(rows, chapter="02_lightweight_models", setup=setup)  # a new run replaces the old
    assert results.load("02_lightweight_models")["claims"][0]["verdict"] == "holds"
    with pytest.raises(ValueError, match="pass setup=book"):
        verdict_table(rows, chapter="02_lightweight_models")


def test_all_of_needs_every_part_to_hold():
    from vitlib.book.claims import all_of

    holds, fails = "holds", "does not hold: too slow"
    unsure = "inconclusive on this machine"
    assert all_of({"speed": holds, "accuracy": holds}) == "holds\n- speed: holds\n- accuracy: holds"
    # each part on its own line, its reason in brackets, "inconclusive on this machine" said once
    assert all_of({"speed": fails, "accuracy": unsure + ": 3 seeds"}) == (
        "does not hold\n- speed: does not hold (too slow)\n- accuracy: inconclusive (3 seeds)")
    assert all_of({"speed": "does not hold for a (inconclusive for b): steps", "n": holds}) == (
        "does not hold\n- speed: does not hold for a (inconclusive for b): steps\n- n: holds")
    assert all_of({"speed": holds, "accuracy": fails}).startswith("does not hold")
    assert all_of({"speed": unsure, "accuracy": holds}).startswith("inconclusive on this machine")
    assert all_of({"speed": "holds only when batch 64", "accuracy": holds}).startswith("inconclusive")
    # a part that cannot be tested here leaves the verdict to the others, and says so
    untested = "not testable here: ImageNet"
    assert all_of({"top-1": "not testable here (ImageNet)"}).endswith("- top-1: not testable here (ImageNet)")
    assert all_of({"a": "not testable here: (x) or (y)"}).endswith("- a: not testable here ((x) or (y))")
    assert all_of({"speed": holds, "top-1": untested}).startswith("holds only when judged on speed\n")
    assert all_of({"speed": fails, "top-1": untested}).startswith("does not hold\n")
    assert all_of({"speed": unsure, "top-1": untested}).startswith("inconclusive on this machine\n")
    assert all_of({"top-1": untested}).startswith("not testable here\n")
    with pytest.raises(ValueError, match="must be a verdict"):
        all_of({"speed": "fast"})
    with pytest.raises(ValueError, match="at least one part"):
        all_of({})


def test_seed_difference_pairs_seeds():
    import pandas as pd

    from vitlib.book.claims import seed_difference

    results = pd.DataFrame({"condition": ["a", "b"] * 3, "seed": [0, 0, 1, 1, 2, 2],
                            "accuracy": [0.80, 0.90, 0.82, 0.91, 0.81, 0.92]})
    results.attrs["test_size"] = 1000
    d = seed_difference(results, "b", "a")
    assert d.value == pytest.approx(10.0) and d.n == 3 and d.unit == "pt"
    assert d.low < 10.0 < d.high
    with pytest.raises(ValueError, match="no condition 'c'"):
        seed_difference(results, "c", "a")


def test_epoch_speedup_reads_every_epoch_of_every_seed():
    import pandas as pd

    from vitlib.book.claims import epoch_speedup

    results = pd.DataFrame({"condition": ["base", "fast"], "seed": [0, 0]})
    results.attrs["histories"] = {
        **{("base", s): pd.DataFrame({"train_s": [1.0, 2.0]}) for s in range(3)},
        **{("fast", s): pd.DataFrame({"train_s": [0.5, 1.0]}) for s in range(3)}}
    m = epoch_speedup(results, "fast", "base")
    assert m.n == 6 and m.value == pytest.approx(2.0)  # epochs of 1 and 2 s against 0.5 and 1 s
    with pytest.raises(ValueError, match="no condition 'slow'"):
        epoch_speedup(results, "slow", "base")
