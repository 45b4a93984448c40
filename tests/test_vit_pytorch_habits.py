"""What vit-pytorch users expect, kept: a distilled student called directly gives one tensor of
logits in any mode (distillation asks for both heads explicitly), and NaViT packs a flat list of
images into bounded sequences by default, in direct calls, ``fit`` and ``evaluate`` alike."""
import pytest
import torch

from tests.test_mixed_resolution import tiny_split
from vitlib import DistillableViT, LeViT, NaViT
from vitlib.data import TensorImageDataset, mixed_resolution
from vitlib.distill import DistillationLoss, distillation_loss
from vitlib.models.na_vit import pack_sequences
from vitlib.train import evaluate, fit
from vitlib.train.recipes import NAVIT_FORWARD

pytestmark = pytest.mark.usefixtures("one_thread")

STUDENT = dict(image_size=8, patch_size=2, num_classes=4, channels=1, dim=16, depth=1, heads=2, dim_head=8,
               mlp_dim=32)
LEVIT = dict(image_size=32, num_classes=4, dim=(16, 24), depth=1, heads=2, mlp_mult=2, stages=2, dim_key=8,
             dim_value=8, channels=1)


class Teacher(torch.nn.Module):
    """A fixed linear teacher of 4 classes."""

    def __init__(self, pixels: int):
        super().__init__()
        self.fc = torch.nn.Linear(pixels, 4)

    def forward(self, x):
        return self.fc(x.flatten(1))


def students():
    torch.manual_seed(0)
    return [DistillableViT(**STUDENT), LeViT(**LEVIT, num_distill_classes=4)]


# ----- (a) a distilled student returns (batch, classes) unless asked for both heads ------------------


@pytest.mark.parametrize("index", [0, 1], ids=["distillable_vit", "levit"])
def test_student_called_directly_gives_one_tensor_of_logits_in_training_mode(index):
    model = students()[index].train()
    x = model.example_input(3)
    pred = model(x)  # vit-pytorch's README: pred = v(img), after distillation as before
    assert isinstance(pred, torch.Tensor) and pred.shape == (3, 4)
    logits, distill = model(x, head="both")  # asked for: both heads, in training as in eval
    torch.testing.assert_close(pred, (logits + distill) / 2)
    if index == 0:  # no dropout and no batch norm: the mode changes nothing
        torch.testing.assert_close(model.eval()(x), pred)


@pytest.mark.parametrize("index", [0, 1], ids=["distillable_vit", "levit"])
def test_distillation_loss_asks_for_both_heads(index):
    model = students()[index].train()
    x, y = model.example_input(4), torch.tensor([0, 1, 2, 3])
    teacher = Teacher(x[0].numel())
    for alpha, silent in ((1.0, "head"), (0.0, "distill_head")):
        model.zero_grad(set_to_none=True)
        loss, logits = DistillationLoss(teacher, alpha=alpha, temperature=2.0)(model, (x, y))
        both = model(x, head="both")
        torch.testing.assert_close(logits, both[0])  # accuracy counts the class head
        expected = distillation_loss(*both, teacher(x), y, temperature=2.0, alpha=alpha)
        torch.testing.assert_close(loss, expected)
        loss.backward()
        # each head learns its own target: the labels' term alone never reaches the distillation head
        assert not getattr(model, silent).weight.grad.any()
        other = "distill_head" if silent == "head" else "head"
        assert getattr(model, other).weight.grad.abs().sum() > 0


def test_distillation_loss_keeps_a_head_named_in_forward_kwargs_and_one_headed_students():
    model = students()[0].train()
    x, y = model.example_input(2), torch.tensor([0, 3])
    teacher = Teacher(x[0].numel())
    loss, logits = DistillationLoss(teacher, alpha=0.3, forward_kwargs={"head": "class"})(model, (x, y))
    one = model(x, head="class")
    torch.testing.assert_close(logits, one)
    torch.testing.assert_close(loss, distillation_loss(one, one, teacher(x), y, alpha=0.3))
    vit = model.to_vit()  # no distillation head, no head keyword: called as it is
    loss, logits = DistillationLoss(teacher)(vit, (x, y))
    assert logits.shape == (2, 4) and torch.isfinite(loss)


def test_fit_trains_a_distillable_vit_with_plain_cross_entropy():
    """In training mode the student used to return a pair, which cross-entropy refused."""
    torch.manual_seed(0)
    train = TensorImageDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,)))
    model = DistillableViT(**STUDENT)
    history = fit(model, train, train, epochs=1, batch_size=8, progress=False)
    assert len(history) == 1 and 0.0 <= history.final["test_acc"] <= 1.0


# ----- (b) NaViT packs a flat list into bounded sequences by default ----------------------------------


def navit(**kw) -> NaViT:
    torch.manual_seed(0)
    return NaViT(**{**dict(image_size=16, patch_size=4, num_classes=3, dim=16, depth=1, heads=2, dim_head=8,
                           mlp_dim=32, channels=1), **kw})


def images(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, h, w, generator=gen) for h, w in sizes]


SIZES = [(16, 16), (8, 8), (8, 16), (16, 8), (4, 4), (8, 8), (16, 16), (4, 8)]


@torch.no_grad()
def test_a_direct_call_packs_as_the_recipes_do():
    model = navit().eval()
    imgs = images(SIZES)
    lengths = [(h // 4) * (w // 4) for h, w in SIZES]
    _, plan = model.prepare(imgs)
    _, recipe = model.prepare(imgs, **NAVIT_FORWARD)
    assert plan.groups == recipe.groups == tuple(map(tuple, pack_sequences(lengths, max(lengths))))
    assert len(plan.groups) > 1 and plan.ids.shape[1] == max(lengths)  # bounded by the longest image
    _, bounded = model.prepare(imgs, group_max_seq_len=24)  # a bound alone packs to it
    assert len(bounded.groups) > 1 and bounded.ids.shape[1] <= 24
    _, one = model.prepare(imgs, group_images=False)  # asked for: one sequence, as before
    assert one.groups == (tuple(range(len(imgs))),)
    alone = torch.cat([model([img]) for img in imgs])
    for out in (model(imgs), model(imgs, **NAVIT_FORWARD), model(imgs, group_images=False)):
        torch.testing.assert_close(out, alone, atol=1e-5, rtol=0)  # packing never changes the logits


def test_fit_and_evaluate_pack_each_batch_into_bounded_sequences(monkeypatch):
    seen = []
    prepare = NaViT.prepare

    def spy(self, *args, **kwargs):
        patches, plan = prepare(self, *args, **kwargs)
        seen.append((self.training, max(plan.lengths), tuple(plan.ids.shape)))
        return patches, plan

    monkeypatch.setattr(NaViT, "prepare", spy)
    mixed = mixed_resolution(tiny_split(n_train=32, n_test=16), sizes=[8, 16], seed=0)
    model = navit()
    fit(model, mixed.train, mixed.test, epochs=1, batch_size=16, progress=False)  # no forward_kwargs
    evaluate(model, mixed.test, batch_size=16)
    assert {training for training, _, _ in seen} == {True, False}  # trained and evaluated
    for _, longest, (sequences, length) in seen:
        assert length == longest <= 16 and sequences > 1  # 16 images of 4 or 16 tokens: never one sequence
