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


@pytest.mark.slow
def test_fit_learns_and_records_history(data):
    model = small_vit(dropout=0.0, emb_dropout=0.0)
    before = evaluate(model, data.test)["accuracy"]
    history = fit(model, data.train, data.test, epochs=3, lr=3e-3, progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "wall_s", "images_per_s"} <= set(history[-1])
    assert all(0 < r["train_s"] <= r["epoch_s"] for r in history)  # training alone, without evaluating
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history.final["test_acc"] > max(0.3, before + 0.2)  # chance is 0.1
    assert list(history.frame().columns)[:2] == ["epoch", "train_loss"]


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_cli_trains_and_checkpoints(tmp_path, capsys):
    ckpt, hist = tmp_path / "cli.safetensors", tmp_path / "h.json"
    assert vtrain.main(["--model", "vit", "--dataset", "digits", "--image-size", "8", "--patch-size", "4",
                        "--dim", "16", "--depth", "1", "--epochs", "1", "--checkpoint", str(ckpt),
                        "--history", str(hist)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert json.loads(hist.read_text())[0]["epoch"] == 1
    assert isinstance(load_model(ckpt), ViT)


@pytest.mark.slow
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


# ----- the loss hook and forward keywords ------------------------------------------------------


class Scaled(torch.nn.Module):
    """A ViT whose forward takes a keyword, recording every value it receives."""

    def __init__(self):
        super().__init__()
        self.inner, self.seen = small_vit(dropout=0.0, emb_dropout=0.0), []

    def forward(self, x, scale=1.0):
        self.seen.append((self.training, scale))
        return self.inner(x) * scale


@pytest.mark.slow
def test_forward_kwargs_reach_training_and_evaluation(data):
    model = Scaled()
    fit(model, data.train, data.test, epochs=1, batch_size=256, forward_kwargs={"scale": 0.5}, progress=False)
    assert {mode for mode, _ in model.seen} == {True, False}  # trained and evaluated
    assert {scale for _, scale in model.seen} == {0.5}
    model.seen.clear()
    evaluate(model, data.test, forward_kwargs={"scale": 2.0})
    assert model.seen and {scale for _, scale in model.seen} == {2.0}


def test_evaluate_takes_the_same_loss_hook_as_fit(data):
    model = small_vit()
    plain = evaluate(model, data.test)
    seen = []

    def doubled(m, batch):
        x, y = batch
        seen.append(m.training)
        logits = m(x)
        return 2 * torch.nn.functional.cross_entropy(logits, y), logits

    hooked = evaluate(model, data.test, loss_fn=doubled, batch_size=100)  # batches of unequal size
    assert seen and not any(seen)  # called in eval mode
    assert hooked["loss"] == pytest.approx(2 * plain["loss"], rel=1e-5)
    assert hooked["accuracy"] == plain["accuracy"] and hooked["n"] == plain["n"]
    with pytest.raises(ValueError, match="forward_kwargs or a loss_fn"):
        evaluate(model, data.test, loss_fn=doubled, forward_kwargs={"scale": 2.0})
    with pytest.raises(TypeError, match=r"must return \(loss, logits\); received Tensor"):
        evaluate(model, data.test, loss_fn=lambda m, b: m(b[0]))


class TwoHeads(torch.nn.Module):
    """A student with a class head and a distillation head: both in training, their mean in eval."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.GELU())
        self.cls, self.dist = torch.nn.Linear(64, 10), torch.nn.Linear(64, 10)

    def forward(self, x):
        h = self.body(x)
        return (self.cls(h), self.dist(h)) if self.training else (self.cls(h) + self.dist(h)) / 2


class Distillation(torch.nn.Module):
    """Hard distillation: the teacher's logits computed once per batch; it holds the teacher."""

    def __init__(self, teacher):
        super().__init__()
        self.teacher, self.teacher_calls, self.moved_to = teacher.eval(), 0, []

    def to(self, *args, **kwargs):
        self.moved_to.append(args)
        return super().to(*args, **kwargs)

    def forward(self, model, batch):
        x, y = batch
        teacher_logits = self.teacher(x)  # no torch.no_grad() on purpose: fit must not train the teacher anyway
        self.teacher_calls += 1
        cls, dist = model(x)
        loss = torch.nn.functional.cross_entropy(cls, y) + torch.nn.functional.cross_entropy(
            dist, teacher_logits.argmax(-1))
        return loss, cls


@pytest.mark.slow
def test_a_loss_with_its_own_teacher_trains_only_the_student(data):
    teacher = small_vit(seed=1)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss = Distillation(teacher)
    student = TwoHeads()
    history = fit(student, data.train, data.test, epochs=2, batch_size=128, lr=3e-3, loss_fn=loss, progress=False)
    assert loss.moved_to == [(torch.device("cpu"),)]  # fit moved the loss (and its teacher) to the device
    assert loss.teacher_calls == 2 * math.ceil(len(data.train) / 128)  # once per batch
    assert not loss.teacher.training  # fit leaves the loss's modules in the mode it set
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, frozen[k]), k  # not optimised, not decayed
    assert history.final["train_loss"] < history[0]["train_loss"]
    assert history.final["train_acc"] > 0.5  # counted from the logits the loss returned (the class head)
    assert history.final["test_acc"] == evaluate(student, data.test)["accuracy"]  # the eval-mode logits


class AlwaysTwoHeads(TwoHeads):
    def forward(self, x):
        h = self.body(x)
        return self.cls(h), self.dist(h)


def test_evaluate_and_fit_refuse_outputs_that_are_not_logits(data):
    with pytest.raises(ValueError, match="AlwaysTwoHeads returned a tuple of 2 in eval mode"):
        evaluate(AlwaysTwoHeads(), data.test)
    with pytest.raises(ValueError, match="returned a tuple of 2 in training mode"):
        fit(TwoHeads(), data.train, epochs=1, progress=False)  # the default loss needs one head
    with pytest.raises(TypeError, match=r"must return \(loss, logits\)"):
        fit(small_vit(), data.train, epochs=1, progress=False,
            loss_fn=lambda model, batch: torch.nn.functional.cross_entropy(model(batch[0]), batch[1]))
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\); received 1.5"):
        fit(small_vit(), data.train, epochs=1, label_smoothing=1.5, progress=False)


# ----- weight decay, devices -------------------------------------------------------------------


class Tables(torch.nn.Module):
    def __init__(self, skip=("table", "bias")):
        super().__init__()
        self.skip = set(skip)
        self.weight = torch.nn.Parameter(torch.randn(4, 4))
        self.table = torch.nn.Parameter(torch.randn(4, 4))  # 2-D, yet named by no_weight_decay()
        self.bias = torch.nn.Parameter(torch.zeros(4))

    def no_weight_decay(self):
        return self.skip


def test_the_optimizer_is_fused_for_floating_point_parameters_on_cpu_or_cuda_only():
    assert vtrain.build_optimizer(Tables(), lr=1e-3, weight_decay=0.05).defaults["fused"]
    doubles = Tables().to(torch.float64)
    assert vtrain.build_optimizer(doubles, lr=1e-3, weight_decay=0.05).defaults["fused"]
    meta = Tables().to("meta")  # no fused kernel there: the loop over tensors
    assert not vtrain.build_optimizer(meta, lr=1e-3, weight_decay=0.05).defaults["fused"]
    assert vtrain.adamw(Tables().parameters(), lr=1e-3).defaults["fused"]
    groups = vtrain.adamw([{"params": (p for p in Tables().parameters())}]).param_groups
    assert len(groups[0]["params"]) == 3  # a generator in a group is read once, not used up
    assert not vtrain.adamw([torch.nn.Parameter(torch.ones(2, device="meta"))]).defaults["fused"]


def test_weight_decay_follows_the_model_and_else_the_parameter_shape():
    opt = vtrain.build_optimizer(Tables(), lr=1e-3, weight_decay=0.05)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [(4, 4)] and len(no_decay["params"]) == 2
    model = Tables()
    groups = vtrain.param_groups(model, 0.05)
    assert groups[0]["params"][0] is model.weight and {id(p) for p in groups[1]["params"]} == {
        id(model.table), id(model.bias)}
    with pytest.raises(ValueError, match=r"names parameters it does not have: \['tabel'\]"):
        vtrain.param_groups(Tables(skip=("tabel",)), 0.05)
    # without no_weight_decay(): by shape only, no guessing from names
    plain = torch.nn.Module()
    plain.pos_embedding = torch.nn.Parameter(torch.randn(1, 4, 8))
    plain.cls_token = torch.nn.Parameter(torch.randn(4, 8))
    plain.bias = torch.nn.Parameter(torch.zeros(8))
    decay, no_decay = (group["params"] for group in vtrain.param_groups(plain, 0.05))
    assert [p.shape for p in decay] == [(1, 4, 8), (4, 8)] and [p.shape for p in no_decay] == [(8,)]


def test_a_missing_device_is_named_before_any_work(data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda' was requested, but CUDA is not available.*available: cpu"):
        fit(small_vit(), data.train, epochs=1, device="cuda", progress=False)
    with pytest.raises(ValueError, match="received 'gpu'"):
        evaluate(small_vit(), data.test, device="gpu")


# ----- checkpoints that are not ----------------------------------------------------------------


def test_a_corrupt_or_truncated_checkpoint_is_named(tmp_path, data):
    good = save_checkpoint(tmp_path / "good.safetensors", small_vit())
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)  # a header length of 2^64 - 1: safetensors' "header too large"
    for path in (truncated, garbage):
        for load in (load_model, load_checkpoint):
            with pytest.raises(ValueError, match=f"{path.name} is not a readable vitlib safetensors checkpoint"):
                load(path)
        with pytest.raises(ValueError, match="not a readable vitlib safetensors checkpoint"):
            fit(small_vit(), data.train, epochs=1, resume=path, progress=False)
    with pytest.raises(ValueError, match="whose weights do not fit the model given"):
        load_checkpoint(good, model=small_vit(dim=48))


# ----- NaViT as a recipe -----------------------------------------------------------------------


@pytest.mark.slow
def test_navit_recipe_packs_each_batch_into_sequences_of_bounded_length(monkeypatch):
    """fit and evaluate used to run a NaViT batch as ONE packed sequence (attention over every token
    of 64 images); the recipe's forward keywords pack it into sequences no longer than its longest image."""
    from vitlib import NaViT

    seen = []
    prepare = NaViT.prepare

    def spy(self, *args, **kwargs):
        patches, plan = prepare(self, *args, **kwargs)
        seen.append((self.training, len(plan.lengths), tuple(plan.ids.shape)))
        return patches, plan

    monkeypatch.setattr(NaViT, "prepare", spy)
    for mode in ("quick", "full"):
        assert vtrain.RECIPES[mode]["navit"]["model"]["name"] == "navit"
        assert "token_dropout_prob" in vtrain.RECIPES[mode]["navit"]["model"]  # NaViT's own keyword
    model, history, data = vtrain.train_recipe(vtrain.RECIPES["quick"]["navit"], epochs=1, progress=False)
    assert isinstance(model, NaViT) and history.final["test_acc"] > 0.2
    assert {tuple(img.shape[-2:]) for img in data.train.images} == {(8, 8), (12, 12), (16, 16)}
    longest = 16  # tokens of a 16x16 image in 4x4 patches
    assert {training for training, _, _ in seen} == {True, False}  # trained and evaluated
    for _, images, (sequences, length) in seen:
        assert length <= longest and (images == 1 or sequences > 1)
    assert max(images for _, images, _ in seen) >= 64  # whole batches went through


# ----- the command line ------------------------------------------------------------------------


class Stop(Exception):
    """Raised by a spy to end a command before it trains."""


def spy_on(monkeypatch, name):
    from vitlib.train import cli

    calls = []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        raise Stop

    monkeypatch.setattr(cli, name, spy)
    return calls


def test_cli_trains_the_recipe_of_the_family_and_mode(monkeypatch):
    calls = spy_on(monkeypatch, "train_recipe")
    with pytest.raises(Stop):
        vtrain.main(["--model", "vit", "--mode", "full", "--dataset", "digits", "--epochs", "2", "--dim", "96"])
    (recipe,), kwargs = calls[0]
    full = vtrain.RECIPES["full"]["simple_vit"]
    assert recipe["model"] == {**full["model"], "name": "vit", "dim": 96}  # full-size, the flag overrides
    assert recipe["fit"]["epochs"] == 2 and recipe["fit"]["batch_size"] == full["fit"]["batch_size"]
    assert kwargs["data"].image_size == (16, 16)  # the quick recipe names the digits: its size
    calls.clear()
    with pytest.raises(Stop):
        vtrain.main(["--model", "navit", "--token-dropout-prob", "0.25"])
    (recipe,), kwargs = calls[0]
    assert recipe["model"]["token_dropout_prob"] == 0.25 and recipe["fit"]["forward_kwargs"]["group_images"]
    assert {tuple(img.shape[-2:]) for img in kwargs["data"].train.images} == {(8, 8), (12, 12), (16, 16)}


def test_cli_takes_the_image_size_from_the_recipe_that_names_the_dataset(monkeypatch):
    calls = spy_on(monkeypatch, "load_recipe_data")
    with pytest.raises(Stop):
        vtrain.main(["--model", "levit", "--mode", "quick", "--dataset", "cifar10"])
    (recipe,), _ = calls[0]
    assert recipe["dataset"] == {"name": "cifar10", "image_size": 64}  # the full recipe's, not 32 px (a 2x2 map)
    assert recipe["model"]["dim"] == vtrain.RECIPES["quick"]["levit"]["model"]["dim"]


@pytest.mark.parametrize("argv, message", [
    (["--device", "cuda"], "error: device 'cuda' was requested, but CUDA is not available"),
    (["--model", "levit", "--image-size", "24"], "error: LeViT's convolutional stem reduces the image 16 times"),
    (["--dataset", "no/such/folder"], "error: dataset must be 'digits', 'cifar10' or an image folder path"),
    (["--model", "levit", "--token-dropout-prob", "0.1"], "error: --token-dropout-prob applies to navit; levit"),
    (["--resume", "CORRUPT"], "CORRUPT.safetensors is not a readable vitlib safetensors checkpoint"),
])
def test_cli_errors_are_one_line_before_any_work(monkeypatch, capsys, tmp_path, argv, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    corrupt = tmp_path / "CORRUPT.safetensors"
    corrupt.write_bytes(b"\xff" * 64)
    argv = [str(corrupt) if a == "CORRUPT" else a for a in argv]
    spy_on(monkeypatch, "train_recipe")  # reaching it would raise Stop, not SystemExit
    if "--dataset" not in argv:
        spy_on(monkeypatch, "load_recipe_data")
    with pytest.raises(SystemExit) as exit_:
        vtrain.main([*argv, "--epochs", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


def test_cli_errors_during_training_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        vtrain.main(["--image-size", "8", "--dim", "16", "--depth", "1", "--epochs", "1", "--label-smoothing", "1.5"])
    assert exit_.value.code == 2 and "error: label_smoothing must be in [0, 1); received 1.5" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_trains_navit_and_resumes_it(tmp_path, capsys):
    ckpt = tmp_path / "navit.safetensors"
    args = ["--model", "navit", "--dim", "32", "--depth", "1", "--epochs", "2", "--checkpoint", str(ckpt)]
    assert vtrain.main(args) == 0
    assert "NaViT" in capsys.readouterr().out
    model = load_model(ckpt)
    assert type(model).__name__ == "NaViT" and model.config["dim"] == 32
    assert vtrain.main([*args, "--resume", str(ckpt)]) == 0  # already at epoch 2: nothing left to train
    with pytest.raises(SystemExit):
        vtrain.main([*args, "--epochs", "3", "--resume", str(ckpt)])
    assert "was made for --epochs 2; received 3" in capsys.readouterr().err
