"""Chapter 5's study (vitlib.studies.navit): the mixed-resolution workload, packing, and NaViT's
training steps timed against a padded ViT and across token-dropout probabilities."""
import inspect
from pathlib import Path

import nbformat
import pytest
import torch

import vitlib.bench
import vitlib.widgets
from vitlib.models import NaViT
from vitlib.studies import navit as study
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


def test_comparison_and_sweep_plumbing():
    imgs, labels = study.navit_workload(4, sizes=[8, 16, (16, 24)], num_classes=3)
    res = study.navit_packed_vs_padded(imgs, labels, config=TINY, **FAST)
    assert res["packed_vs_padded"] > 0 and res["vit_pytorch_packed_vs_padded"] > 0
    assert res["vit_pytorch_skipped"] is None
    timings = res["comparison"]["timings"]
    assert set(timings) == {"navit (token dropout 0)", "vit padded", "vit-pytorch navit"}
    assert res["comparison"]["tokens"]["vit padded"] == 4 * (2 * 3 + 1)
    df = study.token_dropout_sweep([0.0, 0.5], imgs, labels, config=TINY, **FAST)
    assert list(df["token_dropout_prob"]) == [0.0, 0.5] and df["speedup"].iloc[0] == 1.0
    counts = study.navit_token_counts(imgs, 8)
    assert list(df["tokens"]) == [sum(counts), sum(max(1, n / 2) for n in counts)]
    assert study.navit_token_counts(imgs, 8, token_dropout_prob=0.5) == [max(1, -(-n // 2)) for n in counts]
    assert (df["median_ms"] > 0).all() and (df["runs"] >= 1).all()


def test_comparison_rejects_what_it_derives_and_labels_that_do_not_fit():
    imgs, labels = study.navit_workload(3, sizes=[8, 16], num_classes=3)
    with pytest.raises(ValueError, match=r"config must not set image_size \(it comes from the images"):
        study.navit_train_comparison(imgs, labels, config={**TINY, "image_size": 16}, **FAST)
    with pytest.raises(ValueError, match="config must not set token_dropout_prob"):
        study.navit_train_comparison(imgs, labels, config={**TINY, "token_dropout_prob": 0.5}, **FAST)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\) for num_classes=2; received labels from 0 to"):
        study.navit_train_comparison(imgs, torch.tensor([0, 1, 2]), config={**TINY, "num_classes": 2}, **FAST)
    with pytest.raises(ValueError, match="one label per image"):
        study.navit_train_comparison(imgs, labels[:2], config=TINY, **FAST)
    with pytest.raises(ValueError, match=r"token_dropout_prob must be one or more probabilities in \[0, 1\)"):
        study.token_dropout_sweep([0.0, 1.0], imgs, labels, config=TINY, **FAST)


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
    res = study.navit_train_comparison(imgs, labels, config={**TINY, "num_classes": 5}, padded_vit=False, **FAST)
    assert res["config"]["num_classes"] == 5
    assert calls and all(kwargs == study.NAVIT_FORWARD and classes == 5 for kwargs, classes in calls)
    assert study.NAVIT_FORWARD == RECIPES["quick"]["navit"]["fit"]["forward_kwargs"]


def test_one_name_for_token_dropout():
    """Every public function and method of the models, the measuring code, the studies and the
    widgets calls token dropout ``token_dropout_prob``, NaViT's own keyword."""
    import vitlib.models.na_vit
    import vitlib.models.packing

    other_names = {"token_dropout", "rate", "rates", "drop_rate", "dropout_rate"}
    for module in (vitlib.models.packing, vitlib.models.na_vit, vitlib.bench, study, vitlib.widgets):
        for name in module.__all__:
            obj = getattr(module, name)
            members = [obj] if not isinstance(obj, type) else [
                m for k, m in vars(obj).items() if callable(m) and not k.startswith("_") or k == "__init__"]
            for fn in members:
                if callable(fn):
                    clash = other_names & set(inspect.signature(fn).parameters)
                    assert not clash, f"{module.__name__}.{name} takes {sorted(clash)}"
                    assert not other_names & {getattr(fn, "__name__", "")}, f"{module.__name__}.{name}"


def test_chapter_5_trains_navit_with_the_recipes_packing():
    """NaViT given a flat list runs it as ONE sequence; a chapter that trains it passes the
    recipe's forward keywords to fit, which pack the batch into bounded sequences."""
    path = Path(__file__).resolve().parents[1] / "book" / "05_navit.ipynb"
    cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    training = [src for src in cells if "fit(" in src and "NaViT(" in src]
    assert training, "chapter 5 no longer trains NaViT with fit"
    for src in training:
        assert "forward_kwargs" in src and 'RECIPES[' in src
