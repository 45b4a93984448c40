"""Knowledge distillation: DistillableViT, the frozen teacher, the losses, fit, conversion, the CLI."""
import json
import math

import pytest
import torch
from torch import nn

import vitlib
import vitlib.distill
from vitlib import DistillableViT, DistillWrapper, LeViT, ResNet, ViT
from vitlib import train as vtrain
from vitlib.convert import from_vit_pytorch
from vitlib.data import digits
from vitlib.distill import DistillationLoss, distillation_loss, image_keys
from vitlib.train import RandomShift, fit, load_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

STUDENT = dict(image_size=8, patch_size=2, num_classes=10, channels=1, dim=32, depth=2, heads=2, dim_head=16,
               mlp_dim=48)


@pytest.fixture(scope="module")
def data():
    return digits(image_size=8)


def student(seed=0, **kw) -> DistillableViT:
    torch.manual_seed(seed)
    return DistillableViT(**{**STUDENT, **kw})


def teacher(seed=1, **kw) -> ResNet:
    torch.manual_seed(seed)
    return ResNet(**{**dict(image_size=8, num_classes=10, channels=1, layers=(1, 1), widths=(8, 16)), **kw})


def bn_stats(model: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for b in (m.running_mean,
                                                                                          m.running_var)]


class Fixed(nn.Module):
    """A model that returns given logits, whatever the images (for hand-computed losses)."""

    def __init__(self, *outputs):
        super().__init__()
        self.outputs = outputs
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        out = tuple(o + 0 * self.weight for o in self.outputs)
        return out if len(out) > 1 else out[0]


# ----- the names vit-pytorch users write ------------------------------------------------------------


def test_importable_as_vit_pytorch_users_write_it():
    assert vitlib.DistillableViT is vitlib.distill.DistillableViT is DistillableViT
    assert vitlib.DistillWrapper is vitlib.distill.DistillWrapper
    assert vitlib.MODELS["distillable_vit"] is DistillableViT and vitlib.MODELS["resnet"] is ResNet


def test_the_blog_posts_example_runs():
    import torchvision

    v = DistillableViT(image_size=64, patch_size=32, num_classes=10, dim=64, depth=1, heads=2, mlp_dim=64,
                       dropout=0.1, emb_dropout=0.1)
    distiller = DistillWrapper(student=v, teacher=torchvision.models.resnet18(weights=None, num_classes=10),
                               temperature=3, alpha=0.5, hard=False)
    loss = distiller(torch.randn(2, 3, 64, 64), torch.randint(0, 10, (2,)))
    loss.backward()
    assert loss.ndim == 0 and v.distill_token.grad is not None and v.to_vit().config["dim"] == 64


# ----- the teacher: frozen, in eval mode, not a parameter ---------------------------------------------


def test_teacher_frozen_and_in_eval_mode_after_train():
    t = teacher().train()
    distiller = DistillWrapper(student=student(), teacher=t, temperature=3.0, alpha=0.5)
    distiller.train()
    assert distiller.student.training and not t.training and not any(m.training for m in t.modules())
    assert not any(p.requires_grad for p in t.parameters())
    before = bn_stats(t)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    distiller(x, y).backward()
    t.train()  # even if someone puts the teacher back in training mode
    distiller(x, y)
    assert not t.training
    assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(t))), "the teacher's batch norms drifted"
    assert all(p.grad is None for p in t.parameters())


def test_parameters_and_state_hold_only_what_trains():
    s, t = student(), teacher()
    distiller = DistillWrapper(student=s, teacher=t)
    assert {id(p) for p in distiller.parameters()} == {id(p) for p in s.parameters()}
    assert all(k.startswith("student.") for k in distiller.state_dict())
    frozen = {k: v.clone() for k, v in t.state_dict().items()}
    opt = torch.optim.AdamW(distiller.parameters(), lr=0.1, weight_decay=0.5)
    distiller(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))).backward()
    opt.step()
    assert all(torch.equal(v, frozen[k]) for k, v in t.state_dict().items())


def test_to_moves_the_teacher_and_the_students_token():
    s, t = student(), teacher()
    distiller = DistillWrapper(student=s, teacher=t).to(torch.float64)
    assert t.conv1.weight.dtype == torch.float64 and s.distill_token.dtype == torch.float64
    assert distiller(torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,))).isfinite()
    s.to("meta")  # a device move: the token and its head go with the student
    assert s.distill_token.device.type == "meta" and s.distill_head.weight.device.type == "meta"


def test_the_token_and_head_belong_to_the_student():
    s = student()
    state = s.state_dict()
    assert state["distill_token"].shape == (1, 32) and state["distill_head.weight"].shape == (10, 32)
    kinds = s.components()
    assert kinds["distill_token"] == "positions + tokens" and kinds["distill_head"] == "head"
    assert "distill_token" in s.no_weight_decay() and "distill_head.weight" not in s.no_weight_decay()
    assert s.parts()["head"] == ["head", "distill_head"]


def test_wrapper_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="mlp_layernorm"):
        DistillWrapper(student=student(), teacher=teacher(), mlp_layernorm=True)
    with pytest.raises(ValueError, match="teacher's image_size is \\(16, 16\\), the student's \\(8, 8\\)"):
        DistillWrapper(student=student(), teacher=teacher(image_size=16))
    for bad in (dict(alpha=1.5), dict(alpha=-0.1), dict(temperature=0), dict(temperature="3")):
        with pytest.raises(ValueError, match="received"):
            DistillWrapper(student=student(), teacher=teacher(), **bad)
    with pytest.raises(TypeError, match="hard must be True"):
        DistillWrapper(student=student(), teacher=teacher(), hard="yes")
    loss = DistillationLoss(Fixed(torch.zeros(2, 5)))
    with pytest.raises(ValueError, match=r"teacher gives logits of shape \(2, 5\).*\(2, 10\)"):
        loss(Fixed(torch.zeros(2, 10), torch.zeros(2, 10)), (torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)))


# ----- the losses against hand-computed values --------------------------------------------------------

S = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.5]]      # class head
D = [[1.0, 0.0, 0.0], [-0.5, 2.0, 1.5]]      # distillation head
T_ = [[3.0, 1.0, 0.0], [0.0, 0.5, 2.5]]      # teacher
Y = [0, 2]


def softmax(row, t=1.0):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def hand_ce(rows, labels):
    return sum(-math.log(softmax(r)[y]) for r, y in zip(rows, labels)) / len(rows)


def hand_kl(student_rows, teacher_rows, t):
    total = 0.0
    for s, q in zip(student_rows, teacher_rows):
        p_s, p_t = softmax(s, t), softmax(q, t)
        total += sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    return total / len(student_rows) * t * t


@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (3.0, 0.5), (4.0, 0.9)])
def test_soft_loss_against_hand_computed_values(temperature, alpha):
    expected = (1 - alpha) * hand_ce(S, Y) + alpha * hand_kl(D, T_, temperature)
    loss = DistillationLoss(Fixed(torch.tensor(T_)), temperature=temperature, alpha=alpha)
    got, logits = loss(Fixed(torch.tensor(S), torch.tensor(D)), (torch.zeros(2, 1), torch.tensor(Y)))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(logits, torch.tensor(S))  # accuracy is counted on the class head
    # one head: both terms on it (Hinton et al.)
    single, _ = DistillationLoss(Fixed(torch.tensor(T_)), temperature=temperature, alpha=alpha)(
        Fixed(torch.tensor(S)), (torch.zeros(2, 1), torch.tensor(Y)))
    assert single.item() == pytest.approx((1 - alpha) * hand_ce(S, Y) + alpha * hand_kl(S, T_, temperature), rel=1e-5)


def test_hard_loss_against_hand_computed_values():
    teacher_labels = [max(range(3), key=row.__getitem__) for row in T_]  # [0, 2]
    expected = 0.7 * hand_ce(S, Y) + 0.3 * hand_ce(D, teacher_labels)
    loss = DistillationLoss(Fixed(torch.tensor(T_)), alpha=0.3, hard=True, temperature=5.0)  # T plays no part
    got, _ = loss(Fixed(torch.tensor(S), torch.tensor(D)), (torch.zeros(2, 1), torch.tensor(Y)))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    smooth = distillation_loss(torch.tensor(S), torch.tensor(D), torch.tensor(T_), torch.tensor(Y), alpha=0.3,
                               hard=True, label_smoothing=0.1)
    assert smooth.item() > got.item()  # smoothing applies to the labels' term


def test_wrapper_call_overrides_temperature_and_alpha():
    distiller = DistillWrapper(student=Fixed(torch.tensor(S), torch.tensor(D)), teacher=Fixed(torch.tensor(T_)))
    got = distiller(torch.zeros(2, 1), torch.tensor(Y), temperature=2.0, alpha=1.0)
    assert got.item() == pytest.approx(hand_kl(D, T_, 2.0), rel=1e-5)


# ----- heads: eval_head in either mode, both or either by choice ---------------------------------------


def test_heads_in_training_and_eval():
    s = student().train()
    x = s.example_input(3)
    logits, distill = s(x, head="both")
    assert logits.shape == distill.shape == (3, 10) and not torch.equal(logits, distill)
    s.eval()
    with torch.no_grad():
        both = s(x, head="both")
        torch.testing.assert_close(s(x), (both[0] + both[1]) / 2)
        assert torch.equal(s(x, head="class"), both[0]) and torch.equal(s(x, head="distill"), both[1])
        one = DistillableViT(**{**STUDENT, "eval_head": "distill"})
        one.load_state_dict(s.state_dict())
        assert torch.equal(one.eval()(x), both[1])
    with pytest.raises(ValueError, match=r"head must be one of \('mean', 'class', 'distill', 'both'\); received 'avg'"):
        s(x, head="avg")
    with pytest.raises(ValueError, match="eval_head must be one of"):
        DistillableViT(**{**STUDENT, "eval_head": "first"})


def test_levit_distillation_head_takes_part_the_same_way():
    torch.manual_seed(0)
    cfg = dict(image_size=32, num_classes=5, dim=(16, 24), depth=1, heads=2, mlp_mult=2, stages=2, dim_key=8,
               dim_value=8)
    model = LeViT(**cfg, num_distill_classes=5)
    x = torch.randn(2, 3, 32, 32)
    logits, distill = model.train()(x, head="both")
    model.eval()
    with torch.no_grad():
        a, b = model(x, head="both")
        torch.testing.assert_close(model(x), (a + b) / 2)
    assert LeViT(**cfg, num_distill_classes=3).eval().eval_head == "both"  # nothing to average
    with pytest.raises(ValueError, match="averages the class and distillation heads"):
        LeViT(**cfg, num_distill_classes=3, eval_head="mean")
    with pytest.raises(ValueError, match="needs a distillation head"):
        LeViT(**cfg)(x, head="distill")
    loss = DistillWrapper(student=model.train(), teacher=teacher(image_size=32, channels=3, num_classes=5))(
        x, torch.tensor([0, 4]))
    loss.backward()
    assert model.distill_head.weight.grad is not None


# ----- to_vit, conversion, checkpoints ---------------------------------------------------------------


def vit_pytorch_wrapper(pool="cls", seed=0):
    from vit_pytorch.distill import DistillableViT as VPDistillableViT
    from vit_pytorch.distill import DistillWrapper as VPDistillWrapper

    torch.manual_seed(seed)
    vp = VPDistillableViT(image_size=16, patch_size=4, num_classes=7, dim=32, depth=2, heads=2, dim_head=16,
                          mlp_dim=48, pool=pool, channels=3)
    return VPDistillWrapper(student=vp, teacher=nn.Identity(), temperature=3, alpha=0.5).eval()


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_conversion_parity_with_vit_pytorch(pool):
    wrapper = vit_pytorch_wrapper(pool)
    out = from_vit_pytorch(wrapper)
    assert isinstance(out, DistillableViT) and not out.training and out.config["pool"] == pool
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        logits, tokens = wrapper.student(x, distill_token=wrapper.distillation_token)
        expected = (logits, wrapper.distill_mlp(tokens))
        got = out(x, head="both")
        for e, g in zip(expected, got, strict=True):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=0)
        torch.testing.assert_close(out(x), (expected[0] + expected[1]) / 2, atol=1e-5, rtol=0)


def test_to_vit_keeps_the_weights_and_matches_vit_pytorch():
    wrapper = vit_pytorch_wrapper()
    student_ = from_vit_pytorch(wrapper)
    vit = student_.to_vit()
    assert type(vit) is ViT and not vit.training
    assert vit.config == {k: v for k, v in student_.config.items() if k != "eval_head"}
    mine, theirs = vit.state_dict(), student_.state_dict()
    assert set(theirs) - set(mine) == {"distill_token", "distill_head.weight", "distill_head.bias"}
    assert all(torch.equal(v, theirs[k]) and v.data_ptr() != theirs[k].data_ptr() for k, v in mine.items())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():  # a plain ViT runs without the token, as vit-pytorch's to_vit() does
        torch.testing.assert_close(vit(x), wrapper.student.to_vit().eval()(x), atol=1e-5, rtol=0)


def test_conversion_refuses_what_it_cannot_carry():
    wrapper = vit_pytorch_wrapper()
    with pytest.raises(ValueError, match="pass the wrapper"):
        from_vit_pytorch(wrapper.student)
    from vit_pytorch.distill import DistillWrapper as VPDistillWrapper

    with pytest.raises(ValueError, match="mlp_layernorm=True"):
        from_vit_pytorch(VPDistillWrapper(student=wrapper.student, teacher=nn.Identity(), mlp_layernorm=True))


def test_student_checkpoint_round_trip(tmp_path):
    s = student(eval_head="class")
    with torch.no_grad():
        s.distill_token.add_(1.0)
    path = save_checkpoint(tmp_path / "student.safetensors", s)
    again = load_model(path)
    assert type(again) is DistillableViT and again.config == s.config and again.eval_head == "class"
    assert torch.equal(again.distill_token, s.distill_token)
    x = s.example_input(2)
    with torch.no_grad():
        for a, b in zip(again(x, head="both"), s.eval()(x, head="both")):
            torch.testing.assert_close(a, b)


# ----- fit with the distillation loss ----------------------------------------------------------------


def test_fit_with_the_distillation_loss_costs_one_teacher_forward_per_batch(data):
    t = teacher().eval()
    frozen = {k: v.clone() for k, v in t.state_dict().items()}
    loss = DistillationLoss(t, temperature=3.0, alpha=0.5, label_smoothing=0.1)
    s = student()
    history = fit(s, data.train, data.test, epochs=2, batch_size=256, lr=3e-3, loss_fn=loss,
                  augment=RandomShift(1), progress=False)
    batches = math.ceil(len(data.train) / 256)
    assert loss.teacher_forwards == 2 * batches
    assert history.final["train_loss"] < history[0]["train_loss"]
    assert all(torch.equal(v, frozen[k]) for k, v in t.state_dict().items()) and not t.training


def test_precomputed_teacher_logits_replace_the_teacher_without_augmentation(data):
    t = teacher().eval()
    loss = DistillationLoss(t, hard=True)
    loss.precompute(data.train, batch_size=512)
    assert loss.teacher_forwards == math.ceil(len(data.train) / 512)
    counted = loss.teacher_forwards
    x = data.train.images[torch.randperm(len(data.train))[:100]]
    with torch.no_grad():
        torch.testing.assert_close(loss.teacher_logits(x), t(x))  # from the cache: the same logits
    assert loss.teacher_forwards == counted
    moved = x.clone()
    moved[0, 0, 0, 0] += 1e-3  # one pixel changed: not a training image any more, the teacher runs
    with torch.no_grad():
        torch.testing.assert_close(loss.teacher_logits(moved), t(moved))
    assert loss.teacher_forwards == counted + 1
    fit(student(), data.train, epochs=2, batch_size=256, lr=3e-3, loss_fn=loss, progress=False)
    assert loss.teacher_forwards == counted + 1  # two epochs, no teacher forward


def test_image_keys_are_exact_and_batch_independent():
    x = torch.randn(50, 3, 8, 8)
    keys = image_keys(x)
    assert torch.equal(image_keys(x[10:20]), keys[10:20]) and len(set(keys.tolist())) == 50
    y = x.clone()
    y[3, 2, 7, 7] = torch.nextafter(y[3, 2, 7, 7], torch.tensor(1e9))  # the smallest change a float allows
    assert (image_keys(y) != keys).tolist() == [i == 3 for i in range(50)]


# ----- the command line ------------------------------------------------------------------------------


@pytest.fixture()
def teacher_checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "teacher.safetensors", teacher().eval())


def test_cli_trains_a_student_from_a_teacher_checkpoint(tmp_path, capsys, teacher_checkpoint):
    ckpt, hist = tmp_path / "student.safetensors", tmp_path / "h.json"
    args = ["--model", "distillable_vit", "--teacher", str(teacher_checkpoint), "--image-size", "8", "--patch-size",
            "4", "--dim", "16", "--depth", "1", "--epochs", "1", "--batch-size", "256", "--shift", "0"]
    assert vtrain.main([*args, "--hard", "--alpha", "0.7", "--checkpoint", str(ckpt), "--history", str(hist)]) == 0
    out = capsys.readouterr().out
    assert "teacher: ResNet from" in out and "test accuracy" in out
    assert json.loads(hist.read_text())[0]["epoch"] == 1
    model = load_model(ckpt)
    assert isinstance(model, DistillableViT) and model.config["dim"] == 16
    # a single-headed family learns from the teacher with its one head
    assert vtrain.main(["--model", "vit", "--teacher", str(teacher_checkpoint), "--image-size", "8",
                        "--patch-size", "4", "--dim", "16", "--depth", "1", "--epochs", "1", "--shift", "0"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--model", "distillable_vit"], "distillable_vit learns from a teacher: pass --teacher CHECKPOINT"),
    (["--alpha", "0.3"], "--temperature, --alpha and --hard set distillation, which needs --teacher"),
    (["--model", "navit", "--teacher", "TEACHER"], "--teacher: NaViT trains on lists of images"),
    (["--model", "distillable_vit", "--teacher", "CORRUPT"], "is not a readable vitlib safetensors checkpoint"),
    (["--model", "distillable_vit", "--teacher", "MISSING"], "no checkpoint at"),
    (["--model", "distillable_vit", "--teacher", "TEACHER", "--image-size", "16"],
     "has image_size=(8, 8); the student's data (digits) has image_size=(16, 16)"),
    (["--model", "distillable_vit", "--teacher", "FIVE"], "has num_classes=5; the student's data (digits) has "
                                                          "num_classes=10"),
    (["--model", "distillable_vit", "--teacher", "TEACHER", "--image-size", "8", "--alpha", "2"],
     "alpha must be a number >= 0.0 and <= 1.0; received 2.0"),
])
def test_cli_teacher_errors_are_one_line(tmp_path, capsys, teacher_checkpoint, argv, message):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 64)
    five = save_checkpoint(tmp_path / "five.safetensors", teacher(num_classes=5))
    paths = {"TEACHER": teacher_checkpoint, "CORRUPT": corrupt, "MISSING": tmp_path / "none.safetensors",
             "FIVE": five}
    argv = [str(paths.get(a, a)) for a in argv]
    if "--image-size" not in argv:
        argv += ["--image-size", "8"]
    with pytest.raises(SystemExit) as exit_:
        vtrain.main([*argv, "--epochs", "1", "--dim", "16", "--depth", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err


def test_unlabelled_images_learn_from_the_teacher_only():
    from vitlib.distill import UNLABELLED

    labels = torch.tensor([Y[0], UNLABELLED])
    loss = DistillationLoss(Fixed(torch.tensor(T_)), temperature=2.0, alpha=0.4)
    got, _ = loss(Fixed(torch.tensor(S), torch.tensor(D)), (torch.zeros(2, 1), labels))
    expected = 0.6 * hand_ce(S[:1], Y[:1]) + 0.4 * hand_kl(D, T_, 2.0)  # the labels' term over the labelled one
    assert got.item() == pytest.approx(expected, rel=1e-5)
    none, _ = loss(Fixed(torch.tensor(S), torch.tensor(D)), (torch.zeros(2, 1), torch.full((2,), UNLABELLED)))
    assert none.item() == pytest.approx(0.4 * hand_kl(D, T_, 2.0), rel=1e-5)  # finite: no label, no NaN


# ----- the teacher family: a ResNet sized for the data, torchvision's weights where they fit -----------


def test_resnet18_is_torchvisions_network():
    import torchvision

    from vitlib.models import presets

    ours = presets.create("ResNet-18", num_classes=7, image_size=64)
    theirs = torchvision.models.resnet18(weights=None, num_classes=7)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    ours.load_state_dict(theirs.state_dict())  # same names, same shapes
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))
    with torch.device("meta"):
        fifty = presets.create("ResNet-50")
    assert sum(p.numel() for p in fifty.parameters()) == 25_557_032  # torchvision's count
    assert ours.imagenet_arch == "resnet18" and teacher().imagenet_arch is None


def test_imagenet_weights_load_where_shapes_fit_and_fail_clearly(monkeypatch, capsys):
    import torchvision
    from torchvision.models import ResNet18_Weights

    from vitlib.train.recipes import start_from_imagenet

    source = torchvision.models.resnet18(weights=None).state_dict()
    monkeypatch.setattr(ResNet18_Weights, "get_state_dict", lambda self, progress=False: source)
    model = ResNet(image_size=32, num_classes=10, layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem="cifar")
    left = model.load_imagenet_weights()
    assert left == ["conv1.weight", "fc.bias", "fc.weight"]  # the CIFAR stem and the classifier are new
    assert torch.equal(model.layer3[1].conv2.weight, source["layer3.1.conv2.weight"])

    def offline(self, progress=False):
        raise OSError("network unreachable")

    monkeypatch.setattr(ResNet18_Weights, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match=r"could not fetch torchvision's resnet18 ImageNet weights .*unreachable"):
        model.load_imagenet_weights()
    assert start_from_imagenet(model) is False
    assert "ImageNet weights unavailable, so the ResNet trains from scratch" in capsys.readouterr().out
    with pytest.raises(ValueError, match="torchvision has ImageNet weights for"):
        teacher().load_imagenet_weights()


def test_resnet_refuses_bad_configurations():
    for bad, message in [(dict(block="wide"), "block must be one of"), (dict(stem="tiny"), "stem must be one of"),
                         (dict(layers=(1, 1), widths=(8,)), "one value per stage"),
                         (dict(widths=(8, 0)), r"received widths\[1\]=0")]:
        with pytest.raises(ValueError, match=message):
            teacher(**bad)


@pytest.mark.slow
def test_cli_trains_a_teacher_then_a_student_from_it(tmp_path, capsys):
    teacher_path, student_path = tmp_path / "t.safetensors", tmp_path / "s.safetensors"
    assert vtrain.main(["--model", "resnet", "--image-size", "8", "--epochs", "1", "--checkpoint",
                        str(teacher_path)]) == 0
    assert isinstance(load_model(teacher_path), ResNet)
    assert vtrain.main(["--model", "distillable_vit", "--teacher", str(teacher_path), "--image-size", "8",
                        "--patch-size", "4", "--dim", "16", "--depth", "1", "--epochs", "1", "--temperature", "2",
                        "--checkpoint", str(student_path)]) == 0
    assert "teacher: ResNet" in capsys.readouterr().out and isinstance(load_model(student_path), DistillableViT)


def test_agreement_counts_the_shared_top_classes(data):
    from vitlib.distill import agreement

    t = teacher().train()
    assert agreement(t, t, data.test) == 1.0 and t.training  # a model agrees with itself; its mode restored
    n = len(data.test)  # one batch of 512: Fixed models answer it whole
    always_zero = Fixed(torch.zeros(n, 10))
    cycling = Fixed(torch.nn.functional.one_hot(torch.arange(n) % 10, 10).float())
    assert agreement(always_zero, cycling, data.test) == pytest.approx(len(range(0, n, 10)) / n)
    with pytest.raises(ValueError, match="empty"):
        agreement(t, t, torch.utils.data.TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0)))


def test_per_call_settings_leave_the_wrapper_and_its_loss_as_they_were(data):
    """``temperature``, ``alpha`` and the student's keywords apply to one call: the loss, which
    fit may also use, keeps its own."""
    distiller = DistillWrapper(student=student(), teacher=teacher(), temperature=2.0, alpha=0.5)
    x, y = data.train.images[:8], data.train.labels[:8]
    plain = distiller(x, y)
    overridden = distiller(x, y, temperature=4.0, alpha=0.2, head="both")
    assert distiller.loss.forward_kwargs == {} and (distiller.temperature, distiller.alpha) == (2.0, 0.5)
    assert torch.equal(distiller(x, y), plain) and not torch.equal(overridden, plain)
    loss = DistillationLoss(teacher(), forward_kwargs={"head": "both"})
    loss(student(), (x, y), forward_kwargs={"head": "class"}, temperature=3.0)
    assert loss.forward_kwargs == {"head": "both"} and loss.temperature == 1.0


def test_train_student_defaults_to_the_distillation_settings_of_its_mode(data, monkeypatch):
    from vitlib.distill import train_student
    from vitlib.train.recipes import default_mode

    assert default_mode("cpu", {}) == "quick" and default_mode("cuda", {}) == "full"
    assert default_mode("cpu", {"VITLIB_MODE": " Full "}) == "full"
    with pytest.raises(ValueError, match="VITLIB_MODE must be one of"):
        default_mode("cpu", {"VITLIB_MODE": "fast"})
    monkeypatch.setitem(vtrain.RECIPES["full"]["distillable_vit"], "distill",
                        {"temperature": 7.0, "alpha": 0.25, "hard": False})
    config = {k: v for k, v in STUDENT.items() if k not in ("image_size", "channels", "num_classes")}
    recipe = {"dataset": {"name": "digits", "image_size": 8}, "model": {"name": "distillable_vit", **config},
              "fit": {"epochs": 1, "batch_size": 256, "lr": 1e-3}}  # no distill section of its own
    *_, loss = train_student(recipe, teacher(), data=data, mode="full", progress=False)
    assert (loss.temperature, loss.alpha) == (7.0, 0.25)
    monkeypatch.setenv("VITLIB_MODE", "full")  # no mode named: the mode the book and the CLI would run
    *_, loss = train_student(recipe, teacher(), data=data, progress=False)
    assert (loss.temperature, loss.alpha) == (7.0, 0.25)
