"""Chapter 10's study and widgets: the claims table from recorded results, one budget for every
family, latency with the deployment paths (a failing path recorded, not raised), the Pareto front,
claim C15's verdict logic, the decision guide, and the dashboard (live and static)."""
import math

import pandas as pd
import pytest
import torch
from torch import nn

from vitlib import ViT
from vitlib.book.claims import CLAIMS, VERDICTS, Measured
from vitlib.book import results
from vitlib.book.results import load_all, record
from vitlib.book.studies import choices, synthesis
from vitlib.book.widgets import synthesis as dash

TINY = dict(dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32)
FAST = dict(rounds=1, min_run_time=0.02)


# ---------------------------------------------------------------------------------------------
# the claims table


def test_every_claim_has_its_chapter():
    assert list(results.CLAIM_CHAPTERS) == list(CLAIMS)
    assert results.CLAIM_CHAPTERS["C12"] == "08_deployment"
    assert results.CLAIM_CHAPTERS["C15"] == "10_putting_it_together"


def test_claims_table_gathers_recorded_claims_and_names_the_missing(tmp_path):
    record("02_lightweight_models", mode="quick", device="cpu", directory=tmp_path,
           claims=[{"id": "C2", "measured": "14,698,984 against 14,735,848",
                    "verdict": "does not hold: same size"}])
    record("05_navit", mode="full", device="cpu", directory=tmp_path,
           claims=[{"id": "C9", "measured": "1.16x", "verdict": "inconclusive on this machine"}])
    # a chapter that records another chapter's claim: used only while the own chapter has not
    record("07_attention_and_precision", mode="quick", device="cpu", directory=tmp_path,
           claims=[{"id": "C13", "measured": "borrowed", "verdict": "holds"},
                   {"id": "C9", "measured": "not the own chapter", "verdict": "holds"}])
    live = {"id": "C15", "measured": "SimpleViT with int8: 1.2x", "verdict": "inconclusive on this machine"}
    table = results.claims_table(load_all(tmp_path), extra_rows=[live], recorded={})
    assert list(table["id"]) == [f"C{i}" for i in range(1, 16)]
    assert list(table.columns) == ["id", "claim", "chapter", "measured", "verdict", "device", "mode", "date",
                                   "commit", "source"]
    rows = table.set_index("id")
    assert rows.loc["C2", "measured"] == "14,698,984 against 14,735,848"
    assert rows.loc["C2", "verdict"].startswith("does not hold")
    assert rows.loc["C2", "device"].startswith("cpu: ") and rows.loc["C2", "mode"] == "quick"
    assert rows.loc["C2", "date"] and rows.loc["C2", "commit"]
    assert rows.loc["C9", "measured"] == "1.16x" and rows.loc["C9", "mode"] == "full"  # its own chapter wins
    assert rows.loc["C13", "chapter"] == "07_attention_and_precision"
    assert rows.loc["C15", "measured"] == live["measured"]
    assert rows.loc["C15", "chapter"] == "10_putting_it_together"
    assert rows.loc["C1", "measured"] == "not measured yet: run chapter 2 (02_lightweight_models)"
    assert rows.loc["C12", "measured"].startswith("not measured yet: run chapter 8")
    assert rows.loc["C14", "verdict"] == "not measured yet" and pd.isna(rows.loc["C14", "device"])
    assert rows.loc["C1", "claim"] == CLAIMS["C1"]
    html = dash.claims_view(table).to_html()
    assert "C2: " + CLAIMS["C2"] in html and "quick mode, 20" in html and "pre-wrap" in html
    assert "an earlier run" not in html  # recorded at this very commit
    older = table.assign(commit=table["commit"].where(table["id"] != "C2", "0123456789abcdef"))
    assert "an earlier run, at commit 0123456" in dash.claims_view(older).to_html()


def test_a_fresh_runtime_shows_the_record_and_marks_what_it_measured_itself(tmp_path):
    here, shipped = tmp_path / "here", tmp_path / "shipped"
    record("03_levit", mode="full", device="cpu", directory=shipped,
           claims=[{"id": "C4", "measured": "recorded C4", "verdict": "holds"},
                   {"id": "C5", "measured": "recorded C5", "verdict": "does not hold: x"}])
    record("03_levit", mode="quick", device="cpu", directory=here,
           claims=[{"id": "C5", "measured": "measured here", "verdict": "holds"}])
    table = results.claims_table(load_all(here), recorded=load_all(shipped)).set_index("id")
    assert table.loc["C5", "measured"] == "measured here" and table.loc["C5", "source"] == "this runtime"
    assert table.loc["C4", "measured"] == "recorded C4" and table.loc["C4", "source"] == "recorded"
    assert table.loc["C4", "mode"] == "full" and pd.isna(table.loc["C1", "source"])
    html = dash.claims_view(table.reset_index()).to_html()
    assert "recorded: cpu: " in html and "full mode, 20" in html and "; this runtime" in html


def test_claims_table_refuses_an_extra_row_without_an_id_or_verdict():
    with pytest.raises(ValueError, match="C1"):
        results.claims_table({}, recorded={}, extra_rows=[{"id": "C99", "measured": "", "verdict": "holds"}])
    with pytest.raises(ValueError, match="verdict"):
        results.claims_table({}, recorded={}, extra_rows=[{"id": "C15", "measured": "1x"}])
    assert (results.claims_table({}, recorded={})["verdict"] == "not measured yet").all()


# ---------------------------------------------------------------------------------------------
# the Pareto front


def test_pareto_front_minimises_x_and_maximises_y():
    df = pd.DataFrame({"ms": [1.0, 2.0, 3.0, 2.0, None, 0.5],
                       "acc": [0.5, 0.9, 0.8, 0.9, 1.0, 0.2]}, index=list("abcdef"))
    front = choices.pareto_front(df, "ms", "acc")
    assert front.to_dict() == {"a": True, "b": True, "c": False, "d": True, "e": False, "f": True}
    with pytest.raises(ValueError, match="no column 'latency'"):
        choices.pareto_front(df, "latency", "acc")


# ---------------------------------------------------------------------------------------------
# one budget, then latency (tiny models, one epoch)


@pytest.fixture(scope="module")
def budget(one_thread):
    return synthesis.same_budget(["vit", "navit"], epochs=1, overrides={"vit": TINY, "navit": TINY},
                                 step_rounds=1, min_run_time=0.02)


def test_same_budget_trains_each_family_on_the_same_images(budget):
    assert list(budget["model"]) == ["ViT", "NaViT"]
    assert (budget["params"] > 0).all() and (budget["flops"] > 0).all()
    assert budget["accuracy"].between(0, 1).all() and (budget["test_size"] == 360).all()
    assert list(budget["image_px"]) == [16, 16]
    for name, times in budget.attrs["epoch_times"].items():
        assert len(times) == 1 and math.isclose(budget.set_index("model").loc[name, "train_s"], sum(times))
    steps = budget.attrs["step_times"]  # training steps timed interleaved, at least 5 a side
    assert set(steps) == {"ViT", "NaViT"} and all(len(t) >= 5 for t in steps.values())
    assert (budget["step_ms"] > 0).all()
    trained = budget.attrs["trained"]
    assert set(trained.models) == {"ViT", "NaViT"} and trained.forward_kwargs["NaViT"]["group_images"]
    assert len(trained.data["ViT"].test) == len(trained.data["NaViT"].test)
    assert budget[budget["model"] == "ViT"].attrs["trained"] is trained  # shared, not copied


def test_same_budget_refuses_what_it_does_not_train():
    with pytest.raises(ValueError, match="distillable_vit"):
        synthesis.same_budget(["vit", "distillable_vit"], epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        synthesis.same_budget(["vit"], epochs=0)


def test_latency_table_times_eager_and_int8_with_accuracy(budget):
    table = synthesis.latency_table(budget, optimisations=("eager", "int8"), batch=8, **FAST)
    assert list(zip(table["model"], table["optimisation"])) == [
        ("ViT", "eager"), ("NaViT", "eager"), ("ViT", "int8"), ("NaViT", "int8")]
    assert table["works"].all() and (table["ms"] > 0).all() and (table["batch"] == 8).all()
    rows = table.set_index(["model", "optimisation"])
    itself = rows.loc[("ViT", "eager"), "vs_baseline"]
    assert itself.low <= 1 <= itself.high
    int8 = rows.loc[("NaViT", "int8")]
    assert isinstance(int8["speedup"], Measured) and isinstance(int8["vs_baseline"], Measured)
    assert 0 <= int8["accuracy"] <= 1 and int8["params"] == rows.loc[("NaViT", "eager"), "params"]
    assert table.attrs["test_size"] == 360 and table.attrs["baseline"] == "ViT"
    guide = choices.decision_guide(table).set_index("goal")
    assert "ms per training step (interleaved)" in guide.loc["fastest to train", "measured"]
    result = choices.overall(table)  # the training part from the interleaved steps
    assert "interleaved training steps" in result.verdict


class _OneBatchSize(nn.Module):
    """A model that only takes batches of 4: a deployment path's check on another size fails."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(256, 10)

    def forward(self, x):
        if len(x) != 4:
            raise RuntimeError(f"this model takes 4 images; received {len(x)}")
        return self.head(x.flatten(1))


def test_latency_table_records_a_failing_path_with_its_reason(one_thread):
    torch.manual_seed(0)
    vit = ViT(image_size=16, patch_size=4, num_classes=10, channels=1, **TINY)
    models = {"ViT": vit, "Fixed": _OneBatchSize()}
    table = synthesis.latency_table(models, torch.randn(4, 1, 16, 16), ("eager", "int8"), **FAST)
    rows = table.set_index(["model", "optimisation"])
    assert bool(rows.loc[("ViT", "int8"), "works"]) and rows.loc[("ViT", "int8"), "ms"] > 0
    failed = rows.loc[("Fixed", "int8")]
    assert not failed["works"] and "takes 4 images" in failed["reason"] and math.isnan(failed["ms"])
    assert pd.isna(rows.loc[("Fixed", "eager"), "accuracy"])  # no data set: not measured, not invented
    with pytest.raises(ValueError, match="optimisations"):
        synthesis.latency_table(models, torch.randn(4, 1, 16, 16), ("int8",))
    with pytest.raises(ValueError, match="not in the table"):
        synthesis.latency_table(models, torch.randn(4, 1, 16, 16), {"eager": None, "int8": ["Other"]})
    with pytest.raises(ValueError, match="needs x"):
        synthesis.latency_table(models)


# ---------------------------------------------------------------------------------------------
# claim C15 and the guide, on hand-made tables


def _made(fast_speedup, fast_epochs, fast_accuracy=0.9, fails=False):
    """A latency table: ViT (the baseline) and Fast in eager, Fast with int8 (or failing)."""
    one = Measured.exact(1.0, "x")
    rows = [
        {"model": "ViT", "optimisation": "eager", "works": True, "reason": None, "params": 1000, "flops": 5e6,
         "train_s": 50.0, "accuracy": 0.9, "batch": 16, "ms": 4.0, "ms_low": 3.9, "ms_high": 4.1,
         "speedup": one, "vs_baseline": Measured(1.0, 0.95, 1.05, 5)},
        {"model": "Fast", "optimisation": "eager", "works": True, "reason": None, "params": 500, "flops": 2e6,
         "train_s": float(sum(fast_epochs)), "accuracy": fast_accuracy, "batch": 16,
         "ms": 4.0 / fast_speedup.value, "ms_low": 1.0, "ms_high": 2.0, "speedup": one,
         "vs_baseline": fast_speedup},
        {"model": "Fast", "optimisation": "int8", "works": not fails,
         "reason": "TypeError: no" if fails else None,
         "params": 500, "flops": 2e6, "train_s": float(sum(fast_epochs)),
         "accuracy": None if fails else fast_accuracy, "batch": 16, "ms": math.nan if fails else 1.0,
         "ms_low": math.nan, "ms_high": math.nan, "speedup": None if fails else Measured(1.1, 1.0, 1.2, 5),
         "vs_baseline": None if fails else Measured(fast_speedup.value * 1.1, fast_speedup.low,
                                                    fast_speedup.high * 1.2, 5)},
    ]
    table = pd.DataFrame(rows)
    table.attrs.update(epoch_times={"ViT": [10.0] * 5, "Fast": list(fast_epochs)}, test_size=2000,
                       baseline="ViT", epochs=5, threads=2)
    return table


def test_c15_holds_when_a_combination_is_both_faster_to_train_and_to_infer():
    result = choices.overall(_made(Measured(4.0, 3.5, 4.5, 5), [5.0] * 5))
    assert result.verdict.startswith("holds\n") and result.model == "Fast"
    assert result.training_time.value == pytest.approx(0.5) and result.training_time.unit == "x"
    row = result.row()
    assert row["id"] == "C15" and "Fast" in row["measured"]
    assert any(row["verdict"].startswith(v) for v in VERDICTS)


def test_c15_does_not_hold_when_neither_part_is_met():
    result = choices.overall(_made(Measured(1.5, 1.4, 1.6, 5), [10.0] * 5, fails=True))
    assert result.verdict.startswith("does not hold")
    assert set(result.candidates["optimisation"]) == {"eager"}  # the failing path is no candidate


def test_c15_is_inconclusive_when_a_spread_straddles_the_threshold():
    result = choices.overall(_made(Measured(3.0, 2.0, 4.0, 5), [5.0] * 5, fails=True))
    assert result.verdict.startswith("inconclusive on this machine")
    assert "training time -40%: holds" in result.verdict


def test_c15_ignores_a_combination_clearly_less_accurate():
    result = choices.overall(_made(Measured(4.0, 3.5, 4.5, 5), [5.0] * 5, fast_accuracy=0.5))
    assert result.model == "ViT" and result.verdict.startswith("does not hold")
    with pytest.raises(ValueError, match="baseline 'DeiT'"):
        choices.overall(_made(Measured(4.0, 3.5, 4.5, 5), [5.0] * 5), baseline="DeiT")


def test_decision_guide_takes_every_figure_from_the_table():
    table = _made(Measured(4.0, 3.5, 4.5, 5), [5.0] * 5, fails=True)
    guide = choices.decision_guide(table).set_index("goal")
    assert guide.loc["fastest inference of all", "choice"] == "Fast"
    assert "1.00 ms per batch of 16, 4.00x ViT's eager" in guide.loc["fastest inference of all", "measured"]
    assert guide.loc["fewest parameters", "measured"].startswith("500 parameters; 90.0% test accuracy")
    assert guide.loc["fastest to train", "measured"].startswith("25.0 s for 5 epoch(s)")
    assert guide.loc["paths that fail", "choice"] == "Fast with int8"
    close = _made(Measured(1.1, 0.9, 1.3, 5), [5.0] * 5, fails=True)
    close.loc[1, "ms_high"] = 4.0  # Fast's range now reaches into ViT's (3.9 to 4.1 ms)
    tied = choices.decision_guide(close).set_index("goal").loc["fastest inference of all", "choice"]
    assert tied.startswith("Fast (not told apart from ViT") and "ranges overlap" in tied


# ---------------------------------------------------------------------------------------------
# the dashboard


def test_dashboard_chart_has_an_optimisation_dropdown_and_a_metric_slider():
    chart = dash.dashboard_chart(_made(Measured(4.0, 3.5, 4.5, 5), [5.0] * 5, fails=True))
    assert chart.options == ["eager", "int8"]
    metrics = list(dash.METRICS)
    assert chart.values["eager"] == metrics and chart.values["int8"] == metrics
    layout = chart.figure.layout
    assert layout.title.text == "Dashboard: parameters (M) of each model with eager"
    assert [b.label for b in layout.updatemenus[0].buttons] == ["optimisation: eager", "optimisation: int8"]
    assert layout.updatemenus[0].buttons[1].args[1]["title.text"].endswith("with int8")
    last = layout.sliders[0].steps[-1]
    assert last.label == "accuracy (%)" and last.args[1]["title.text"].startswith("Dashboard: accuracy (%) ")
    failing = [t for t in chart.figure.data if "fails" in (t.text or ())]
    assert failing and all(t.y[1] is None for t in failing)  # the failing path has no bar, and says so
    html = chart.to_html("book")
    assert "Dashboard: parameters (M)" in html
    with pytest.raises(ValueError, match="missing"):
        dash.dashboard_chart(pd.DataFrame({"model": ["ViT"]}))


def test_metric_values_bound_accuracy_by_the_test_set():
    table = _made(Measured(4.0, 3.5, 4.5, 5), [5.0] * 5)
    (value, low, high), *_ = dash.metric_values(table, "accuracy (%)")
    assert value == pytest.approx(90.0) and low < 90 < high
    assert high - low == pytest.approx(4 * 100 * 0.3 / 2000 ** 0.5)  # two standard errors either side
    with pytest.raises(ValueError, match="metric must be one of"):
        dash.metric_values(table, "speed")


def test_the_live_dashboard_builds_and_remeasures(budget):
    import ipywidgets as w
    import matplotlib

    matplotlib.use("Agg")
    table = synthesis.latency_table(budget, optimisations=("eager",), batch=4, **FAST)
    box = dash.dashboard(table, budget, rounds=1, min_run_time=0.02)
    assert isinstance(box, w.VBox)
    pick, (path, live) = box.children[0].children[0], box.children[0].children[1].children
    assert list(pick.options) == ["ViT", "NaViT"] and path.value == "eager" and not live.disabled
    pick.value = ("NaViT",)
    live.value = True  # times NaViT again, now
    assert dash.dashboard(table).children[0].children[1].children[1].disabled  # nothing to re-measure with
    dash.overview_table(table).to_html()
