import json
import math
import os

import pytest
import torch

from vitlib import SimpleViT, ViT
from vitlib import train as vtrain
from vitlib.data import TensorImageDataset, digits
from vitlib.train import RandomShift, evaluate, fit, load_checkpoint, load_model, lr_at, save_checkpoint


@pytest.fixture(scope="module")
def data():
    return digits(image_size=8)


def small_vit(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(image_size=8, patch_size=2, num_classes=10, channels=1, dim=32, depth=2, heads=2, dim_head=16,
               mlp_dim=64, dropout=0.1, emb_dropout=0.1)
    return ViT(**{**cfg, **kw})


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 10, 1.0, 0.01) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)


def test_random_shift_moves_pixels_by_at_most_the_shift():
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    out = RandomShift(2)(x, torch.Generator().manual_seed(0))
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert out.shape == x.shape and torch.all((rows - 4).abs() <= 2) and torch.all((cols - 4).abs() <= 2)
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # really random
    assert torch.equal(RandomShift(0)(x, torch.Generator()), x)


def test_fit_learns_and_records_history(data):
    model = small_vit(dropout=0.0, emb_dropout=0.0)
    before = evaluate(model, data.test)["accuracy"]
    history = fit(model, data.train, data.test, epochs=3, lr=3e-3, progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "wall_s", "images_per_s"} <= set(history[-1])
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history.final["test_acc"] > max(0.3, before + 0.2)  # chance is 0.1
    assert list(history.frame().columns)[:2] == ["epoch", "train_loss"]


def test_resume_equals_continue(tmp_path, data):
    """Stop a run after epoch 2 (a crash), resume from its checkpoint: same losses as uninterrupted."""
    kwargs = dict(epochs=4, batch_size=128, lr=2e-3, augment=RandomShift(1), progress=False, seed=3)
    straight = fit(small_vit(), data.train, data.test, **kwargs)

    class Crash(Exception):
        pass

    def crash_after_two(record):
        if record["epoch"] == 2:
            raise Crash

    ckpt = tmp_path / "run.safetensors"
    with pytest.raises(Crash):
        fit(small_vit(), data.train, data.test, checkpoint=ckpt, callback=crash_after_two, **kwargs)
    resumed_model = load_model(ckpt)
    resumed = fit(resumed_model, data.train, data.test, resume=ckpt, checkpoint=ckpt, **kwargs)
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in straight]
    assert [r["test_acc"] for r in resumed] == [r["test_acc"] for r in straight]
    model = small_vit()
    fit(model, data.train, data.test, **kwargs)
    for (k, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k


def test_resume_with_other_epoch_count_is_refused(tmp_path, data):
    ckpt = tmp_path / "c.safetensors"
    fit(small_vit(), data.train, epochs=1, checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="made for epochs=1; received epochs=3"):
        fit(load_model(ckpt), data.train, epochs=3, resume=ckpt, progress=False)


def test_checkpoint_round_trip(tmp_path):
    model = SimpleViT(image_size=(8, 12), patch_size=4, num_classes=3, dim=16, depth=1, heads=2, mlp_dim=16)
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(2, 3, 8, 12)
    model(x).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "m.safetensors", model, optimizer=opt, state={"epoch": 5, "note": (1, 2)})
    loaded = load_model(path)
    assert isinstance(loaded, SimpleViT) and not loaded.training
    assert loaded.config == model.config and loaded.config["image_size"] == (8, 12)  # tuples survive JSON
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    opt2 = torch.optim.AdamW(loaded.parameters())
    state = load_checkpoint(path, model=loaded, optimizer=opt2)
    assert state["epoch"] == 5 and state["note"] == [1, 2] and state["model_class"] == "SimpleViT"
    for p1, p2 in zip(model.parameters(), loaded.parameters()):
        torch.testing.assert_close(opt.state[p1]["exp_avg"], opt2.state[p2]["exp_avg"], rtol=0, atol=0)
    assert opt2.param_groups[0]["betas"][0] == 0.9


def test_mean_pool_vit_with_empty_class_token_round_trips(tmp_path):
    model = ViT(image_size=8, patch_size=4, num_classes=3, dim=16, depth=1, heads=2, mlp_dim=16, pool="mean")
    loaded = load_model(save_checkpoint(tmp_path / "v.safetensors", model))
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    model = SimpleViT(image_size=8, patch_size=4, num_classes=3, dim=16, depth=1, heads=2, mlp_dim=16)
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    good = path.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_loading_foreign_files_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a vitlib checkpoint"):
        load_model(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")
    m = SimpleViT(image_size=8, patch_size=4, num_classes=3, dim=16, depth=1, heads=2, mlp_dim=16)
    path = save_checkpoint(tmp_path / "s.safetensors", m)
    with pytest.raises(ValueError, match="holds a SimpleViT; received a ViT"):
        load_checkpoint(path, model=small_vit())


def test_fit_rejects_bad_arguments(data):
    with pytest.raises(ValueError, match="received epochs=0"):
        fit(small_vit(), data.train, epochs=0)
    with pytest.raises(ValueError, match="received 'fp8'"):
        fit(small_vit(), data.train, epochs=1, amp="fp8", progress=False)
    with pytest.raises(ValueError, match="empty training set"):
        fit(small_vit(), TensorImageDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0)), epochs=1)


def test_cli_trains_and_checkpoints(tmp_path, capsys):
    ckpt, hist = tmp_path / "cli.safetensors", tmp_path / "h.json"
    assert vtrain.main(["--model", "vit", "--dataset", "digits", "--image-size", "8", "--patch-size", "4",
                        "--dim", "16", "--depth", "1", "--epochs", "1", "--checkpoint", str(ckpt),
                        "--history", str(hist)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert json.loads(hist.read_text())[0]["epoch"] == 1
    assert isinstance(load_model(ckpt), ViT)


def test_cli_trains_other_families_from_their_recipes(tmp_path, capsys):
    ckpt = tmp_path / "levit.safetensors"
    assert vtrain.main(["--model", "levit", "--epochs", "1", "--checkpoint", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "LeViT" in out and "1x32x32" in out  # LeViT's recipe sees the digits at 32 px
    model = load_model(ckpt)
    assert type(model).__name__ == "LeViT" and model.image_size == (32, 32)
    with pytest.raises(SystemExit):
        vtrain.main(["--model", "levit", "--patch-size", "4", "--epochs", "1"])
    assert "--patch-size applies to vit and simple_vit" in capsys.readouterr().err


def test_bench_train_suite_reports_figures(tmp_path, monkeypatch):
    from vitlib import bench

    monkeypatch.setitem(vtrain.QUICK_RECIPE["fit"], "epochs", 1)
    out = tmp_path / "train.json"
    assert bench.main(["train", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["model"] == "SimpleViT" and figures["dataset"] == "digits"
    assert 0.0 <= figures["accuracy"] <= 1.0 and figures["wall_s"] > 0
    assert not math.isnan(figures["accuracy"])
