"""Chapter 5's study (vitlib.book.studies.navit): the mixed-resolution workload, packing, and NaViT's
training steps timed against a padded ViT and across token-dropout probabilities."""
import inspect
from pathlib import Path

import nbformat
import pytest
import torch

import vitlib.bench
import vitlib.book.widgets
from vitlib.models import NaViT
from vitlib.book.studies import navit as study
from vitlib.book.studies import navit_training as training
from vitlib.train import RECIPES

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")]

TINY = dict(patch_size=8, num_classes=3, dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32)
FAST = dict(rounds=1, min_run_time=0.01, warmup=1)


def test_workload_is_reproducible_and_pads_to_the_largest_size():
    imgs, labels = study.navit_workload(6, sizes=[(16, 8), 24], num_classes=4, seed=3)
    again, labels2 = study.navit_workload(6, sizes=[(16, 8), 24], num_classes=4, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(imgs, again)) and torch.equal(labels, labels2)
    assert {tuple(i.shape[-2:]) for i in imgs} <= {(16, 8), (24, 24)} and labels.max() < 4
    batch = study.pad_images(imgs)
    assert batch.shape == (6, 3, 24, 24)
    for img, padded in zip(imgs, batch):
        h, w = img.shape[-2:]
        assert torch.equal(padded[:, :h, :w], img) and padded.abs().sum() == img.abs().sum()


def test_packing_padding_reports_both_packers():
    rows = study.packing_padding([6, 5, 5, 4], (None, 10))
    assert rows[0]["max_len"] == 6 and rows[1]["max_len"] == 10
    assert rows[1]["padding_ours"] == 0.0 and rows[1]["sequences_greedy"] == 3


def test_throughput_table_and_sweep_plumbing():
    imgs, labels = study.navit_workload(4, sizes=[8, 16, (16, 24)], num_classes=3)
    tab = training.throughput_table(imgs, labels, config=TINY, resize_to=(16, 16), **FAST)
    assert list(tab.index) == ["NaViT, packed", "ViT, padded", "ViT, resized", "vit-pytorch NaViT, packed"]
    assert tab.attrs["baseline"] == "ViT, padded" and tab.attrs["vit_pytorch_skipped"] is None
    assert tab.loc["ViT, padded", "tokens"] == 4 * (2 * 3 + 1) and tab.loc["ViT, resized", "tokens"] == 4 * (4 + 1)
    assert tab.loc["ViT, padded", "speedup"] == 1.0
    times = tab.attrs["times"]
    assert all(len(t) >= vitlib.bench.MIN_CALLS for t in times.values())  # a ratio rests on >= 5 calls a side
    ratio = vitlib.bench.speedup(tab, "NaViT, packed")  # a Measured from the per-call times
    assert ratio.n >= vitlib.bench.MIN_CALLS and ratio.low <= ratio.value <= ratio.high
    assert ratio.value == pytest.approx(tab.loc["NaViT, packed", "speedup"])
    df = training.token_dropout_sweep([0.0, 0.5], imgs, labels, config=TINY, **FAST)
    assert list(df["token_dropout_prob"]) == [0.0, 0.5] and df["speedup"].iloc[0] == 1.0
    assert set(df.attrs["times"]) == {0.0, 0.5} and all(len(t) >= 5 for t in df.attrs["times"].values())
    counts = study.navit_token_counts(imgs, 8)
    assert list(df["tokens"]) == [sum(counts), sum(max(1, n / 2) for n in counts)]
    assert study.navit_token_counts(imgs, 8, token_dropout_prob=0.5) == [max(1, -(-n // 2)) for n in counts]
    assert (df["median_ms"] > 0).all() and (df["runs"] >= 1).all()
    # the static chart: one slider step per rate, each the kept tokens and the time as shares of rate 0
    from vitlib.book.widgets import dropout_chart

    chart = dropout_chart(df)
    assert chart.values == {None: ["0", "0.5"]}
    bars = chart.figure.data
    assert len(bars) == 2 and list(bars[0].y) == pytest.approx([1.0, 1.0])
    assert bars[1].y[0] == pytest.approx(df["tokens"].iloc[1] / df["tokens"].iloc[0])
    assert bars[1].y[1] == pytest.approx(df["median_ms"].iloc[1] / df["median_ms"].iloc[0], rel=0.05)
    with pytest.raises(ValueError, match="at least two rates"):
        dropout_chart(df.iloc[:1])


def test_resize_and_the_size_nearest_the_mean_token_count():
    imgs = [torch.randn(3, 16, 16), torch.randn(3, 32, 32), torch.randn(3, 32, 32), torch.randn(3, 48, 48)]
    batch = study.resize_images(imgs, 24)
    assert batch.shape == (4, 3, 24, 24)
    assert torch.allclose(study.resize_images([imgs[1]], (32, 32))[0], imgs[1])  # same size: unchanged
    # tokens at patch 16: 1, 4, 4, 9 -> mean 4.5: 32x32 (4 tokens) is nearer than 48x48 (9)
    assert study.mean_token_size(imgs, 16) == (32, 32)
    tie = [torch.randn(3, 16, 32), torch.randn(3, 16, 48), torch.randn(3, 16, 64), torch.randn(3, 16, 80)]
    assert study.mean_token_size(tie, 16) == (16, 64)  # mean 3.5 tokens: the larger of 3 and 4


def test_batch_layouts_count_what_each_layout_computes():
    imgs = [torch.randn(3, 8, 16), torch.randn(3, 16, 16), torch.randn(3, 8, 8)]  # 2, 4, 1 tokens at patch 8
    rows = {r["layout"]: r for r in study.batch_layouts(imgs, 8, resize_to=(8, 16))}
    assert list(rows) == ["ViT, padded", "ViT, resized", "NaViT, packed", "vit-pytorch, packed in order"]
    pad = rows["ViT, padded"]
    assert (pad["slots"], pad["scores"]) == (3 * 4, 3 * 16)
    assert pad["padding"] == pytest.approx(1 - 7 / 12) and pad["own_image"] == pytest.approx(21 / 48)
    assert rows["ViT, resized"]["slots"] == 3 * 2 and rows["ViT, resized"]["padding"] == 0.0
    packed = rows["NaViT, packed"]  # max_len 4: [4], [2, 1] -> 2 sequences of 4 slots
    assert packed["input"] == "2 sequences x 4" and (packed["slots"], packed["scores"]) == (8, 32)
    assert packed["padding"] == pytest.approx(1 / 8) and packed["own_image"] == pytest.approx(21 / 32)
    assert rows["vit-pytorch, packed in order"]["slots"] == 3 * 4  # in order: [2], [4], [1]


def test_random_packing_never_pads_more_than_in_order():
    trials = study.random_packing(trials=30, max_lens=(256,), seed=1)
    assert len(trials) == 30 and set(trials["max_len"]) == {256}
    assert (trials["ours"] <= trials["greedy"] + 1e-12).all() and (trials["ours"] < trials["greedy"]).any()
    assert trials.equals(study.random_packing(trials=30, max_lens=(256,), seed=1))


def test_qk_norm_keeps_attention_as_sharp_whatever_the_weight_scale():
    rows = study.qk_norm_sharpness((1, 4, 16), tokens=16)
    plain = [r["largest_weight"] for r in rows if not r["qk_norm"]]
    normed = [r["largest_weight"] for r in rows if r["qk_norm"]]
    assert plain[0] < plain[1] < plain[2] and plain[2] > 0.9  # larger weights: attention on one token
    assert max(normed) - min(normed) < 1e-5 and normed[0] < 0.5  # the norm removes the scale


def toy_split(n_train=24, n_test=12, seed=0):
    from vitlib.data import DataSplit, ImageListDataset

    gen = torch.Generator().manual_seed(seed)
    sizes = [(8, 8), (8, 16), (16, 16)]
    imgs = [torch.randn(1, *sizes[i % 3], generator=gen) for i in range(n_train + n_test)]
    labels = torch.randint(0, 3, (n_train + n_test,), generator=gen)
    return DataSplit("toy", ImageListDataset(imgs[:n_train], labels[:n_train]),
                     ImageListDataset(imgs[n_train:], labels[n_train:]), ["a", "b", "c"], (16, 16), 1)


def test_train_dropout_seeds_interleaves_runs_and_packs_as_the_recipe(monkeypatch):
    recipe = {"dataset": {"name": "toy"},
              "model": {"name": "navit", "patch_size": 8, "dim": 16, "depth": 1, "heads": 2, "dim_head": 8,
                        "mlp_dim": 32, "token_dropout_prob": None},
              "fit": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "warmup_epochs": 0,
                      "forward_kwargs": study.NAVIT_FORWARD}}
    calls, forward = [], NaViT.forward

    def spy(self, images, **kwargs):
        calls.append((kwargs, self.token_dropout_prob))
        return forward(self, images, **kwargs)

    monkeypatch.setattr(NaViT, "forward", spy)
    data = toy_split()
    runs = training.train_dropout_seeds(recipe, [0.0, 0.5], [0, 1], data=data)
    assert list(runs["token_dropout_prob"]) == [0.0, 0.5, 0.5, 0.0]  # seed by seed, the order rotated
    assert list(runs["seed"]) == [0, 0, 1, 1] and list(runs["order"]) == [0, 1, 0, 1]
    assert list(runs["condition"]) == ["rate 0", "rate 0.5", "rate 0.5", "rate 0"]
    assert (runs["wall_s"] >= runs["train_s"]).all() and (runs["train_s"] > 0).all()
    assert runs["accuracy"].between(0, 1).all() and runs.attrs["test_size"] == 12
    assert calls and all(kwargs == study.NAVIT_FORWARD for kwargs, _ in calls)  # packed as NaViT trains
    assert {p for _, p in calls} == {None, 0.5}
    with pytest.raises(ValueError, match=r"token_dropout_prob must be one or more probabilities"):
        training.train_dropout_seeds(recipe, [1.0], [0], data=data)
    with pytest.raises(ValueError, match="at least one seed"):
        training.train_dropout_seeds(recipe, [0.0], [], data=data)


def test_wall_speedup_pairs_runs_by_seed():
    import pandas as pd

    runs = pd.DataFrame({"condition": ["rate 0"] * 3 + ["rate 0.3"] * 3, "seed": [0, 1, 2] * 2,
                         "wall_s": [2.0, 4.0, 3.0, 1.0, 2.0, 3.0]})
    m = training.wall_speedup(runs, "rate 0.3", "rate 0")
    assert (m.value, m.low, m.high, m.n) == (2.0, 1.0, 2.0, 3)  # per-seed ratios 2, 2, 1
    with pytest.raises(ValueError, match="no condition 'rate 0.5'"):
        training.wall_speedup(runs, "rate 0.5", "rate 0")


@pytest.mark.slow
def test_token_counts_and_expected_tokens_follow_navits_rounding():
    imgs = [torch.randn(3, 16, 16), torch.randn(3, 8, 8), torch.randn(3, 24, 16)]  # 4, 1, 6 tokens (patch 8)
    assert study.expected_tokens(imgs, 8, 0.3) == pytest.approx(4 * 0.7 + 1 + 6 * 0.7)
    assert study.expected_tokens(imgs, 8, 0.3, "floor") == 2 + 1 + 4  # vit-pytorch's max(1, int(n * 0.7))
    assert study.navit_token_counts(imgs, 8, 0.3) == [3, 1, 5]
    assert study.navit_token_counts(imgs, 8, 0.3, "floor") == [2, 1, 4]
    model = NaViT(image_size=24, token_dropout_prob=0.3, **TINY).train()  # the mean of the model's own draws
    torch.manual_seed(0)
    kept = [sum(model.prepare(imgs)[1].lengths) for _ in range(4000)]
    assert sum(kept) / len(kept) == pytest.approx(study.expected_tokens(imgs, 8, 0.3), abs=0.05)
    assert max(kept) == sum(study.navit_token_counts(imgs, 8, 0.3))
    with pytest.raises(ValueError, match="token_dropout_rounding must be 'stochastic'.*; received 'round'"):
        study.expected_tokens(imgs, 8, 0.3, "round")
    with pytest.raises(ValueError, match="token_dropout_rounding must be 'stochastic'.*; received 'round'"):
        study.navit_token_counts(imgs, 8, 0.3, "round")


def test_comparison_rejects_what_it_derives_and_labels_that_do_not_fit():
    imgs, labels = study.navit_workload(3, sizes=[8, 16], num_classes=3)
    with pytest.raises(ValueError, match=r"config must not set image_size \(it comes from the images"):
        training.navit_train_comparison(imgs, labels, config={**TINY, "image_size": 16}, **FAST)
    with pytest.raises(ValueError, match="config must not set token_dropout_prob"):
        training.navit_train_comparison(imgs, labels, config={**TINY, "token_dropout_prob": 0.5}, **FAST)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\) for num_classes=2; received labels from 0 to"):
        training.navit_train_comparison(imgs, torch.tensor([0, 1, 2]), config={**TINY, "num_classes": 2}, **FAST)
    with pytest.raises(ValueError, match="one label per image"):
        training.navit_train_comparison(imgs, labels[:2], config=TINY, **FAST)
    with pytest.raises(ValueError, match=r"token_dropout_prob must be one or more probabilities in \[0, 1\)"):
        training.token_dropout_sweep([0.0, 1.0], imgs, labels, config=TINY, **FAST)


def test_comparison_honours_num_classes_and_packs_as_in_training(monkeypatch):
    imgs, _ = study.navit_workload(3, sizes=[8, 16], num_classes=5)
    labels = torch.tensor([0, 4, 2])
    calls = []
    forward = NaViT.forward

    def spy(self, images, **kwargs):
        out = forward(self, images, **kwargs)
        calls.append((kwargs, out.shape[-1]))
        return out

    monkeypatch.setattr(NaViT, "forward", spy)
    res = training.navit_train_comparison(imgs, labels, config={**TINY, "num_classes": 5}, padded_vit=False, **FAST)
    assert res["config"]["num_classes"] == 5
    assert calls and all(kwargs == study.NAVIT_FORWARD and classes == 5 for kwargs, classes in calls)
    assert study.NAVIT_FORWARD == RECIPES["quick"]["navit"]["fit"]["forward_kwargs"]


def test_one_name_for_token_dropout():
    """Every public function and method of the models, the measuring code, the studies and the
    widgets calls token dropout ``token_dropout_prob``, NaViT's own keyword."""
    import vitlib.models.na_vit
    import vitlib.models.packing

    other_names = {"token_dropout", "rate", "rates", "drop_rate", "dropout_rate"}
    for module in (vitlib.models.packing, vitlib.models.na_vit, vitlib.bench, study, training, vitlib.book.widgets):
        for name in module.__all__:
            obj = getattr(module, name)
            members = [obj] if not isinstance(obj, type) else [
                m for k, m in vars(obj).items() if callable(m) and not k.startswith("_") or k == "__init__"]
            for fn in members:
                if callable(fn):
                    clash = other_names & set(inspect.signature(fn).parameters)
                    assert not clash, f"{module.__name__}.{name} takes {sorted(clash)}"
                    assert not other_names & {getattr(fn, "__name__", "")}, f"{module.__name__}.{name}"


def test_chapter_5_trains_navit_with_the_recipes_packing_and_draws_the_packing_diagram():
    """NaViT given a flat list runs it as ONE sequence; chapter 5 trains it through the study's
    train_dropout_seeds with the book's NaViT recipe, whose forward keywords pack each batch into
    bounded sequences; and its one mechanism diagram is vitlib's packing diagram (one colour per
    image), not a mask drawn in the page."""
    path = Path(__file__).resolve().parents[1] / "book" / "05_navit.ipynb"
    cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    training = [src for src in cells if "train_dropout_seeds(" in src]
    assert training, "chapter 5 no longer trains NaViT with training.train_dropout_seeds"
    for src in training:
        assert 'RECIPES[book.mode]["navit"]' in src
    assert RECIPES["quick"]["navit"]["fit"]["forward_kwargs"] == study.NAVIT_FORWARD
    assert any("diagrams.packing(" in src for src in cells)
    assert not any("imshow" in src for src in cells)
    assert not any("compiles as one graph" in c.source for c in nbformat.read(path, as_version=4).cells)
