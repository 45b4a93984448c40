"""Mixed-resolution data (a list of images of different sizes) and training NaViT on it with fit."""
import pytest
import torch

from vitlib import NaViT
from vitlib.data import DataSplit, ImageListDataset, TensorImageDataset, mixed_resolution
from vitlib.train import evaluate, fit, load_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_split(n_train=48, n_test=16, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n_train + n_test,), generator=gen)
    # the class is visible in the image: a bright row at a class-dependent height
    images = torch.randn(n_train + n_test, 1, size, size, generator=gen) * 0.1
    for i, y in enumerate(labels.tolist()):
        images[i, 0, 4 * y + 2] += 2.0
    return DataSplit("toy", TensorImageDataset(images[:n_train], labels[:n_train]),
                     TensorImageDataset(images[n_train:], labels[n_train:]), ["a", "b", "c"], (size, size), 1)


def test_mixed_resolution_resizes_each_image_to_one_of_the_sizes():
    split = tiny_split()
    mixed = mixed_resolution(split, sizes=[8, (12, 16), 16], seed=1)
    assert isinstance(mixed.train, ImageListDataset) and len(mixed.train) == 48 and len(mixed.test) == 16
    shapes = {tuple(img.shape) for img in mixed.train.images}
    assert shapes <= {(1, 8, 8), (1, 12, 16), (1, 16, 16)} and len(shapes) == 3
    assert mixed.image_size == (16, 16)
    assert torch.equal(mixed.train.labels, split.train.labels)
    # an image kept at 16x16 is the original
    i = next(i for i, img in enumerate(mixed.train.images) if img.shape[-2:] == (16, 16))
    assert torch.allclose(mixed.train.images[i], split.train.images[i], atol=1e-6)
    again = mixed_resolution(split, sizes=[8, (12, 16), 16], seed=1)
    assert [img.shape for img in again.train.images] == [img.shape for img in mixed.train.images]


def test_mixed_resolution_and_dataset_reject_bad_input():
    with pytest.raises(ValueError, match="at least one size"):
        mixed_resolution(tiny_split(), sizes=[])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ImageListDataset([torch.zeros(8, 8)], torch.zeros(1))
    with pytest.raises(ValueError, match="labels"):
        ImageListDataset([torch.zeros(1, 8, 8)], torch.zeros(2))


def test_fit_trains_navit_on_a_list_of_images():
    mixed = mixed_resolution(tiny_split(), sizes=[8, 16], seed=0)
    torch.manual_seed(0)
    model = NaViT(image_size=16, patch_size=4, num_classes=3, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64,
                  channels=1, token_dropout_prob=0.25)
    before = evaluate(model, mixed.test)["loss"]
    history = fit(model, mixed.train, mixed.test, epochs=6, batch_size=16, lr=3e-3, warmup_epochs=1, progress=False)
    assert len(history) == 6
    assert history.final["test_loss"] < before
    assert history.final["train_acc"] > 0.5  # three classes: chance is 1/3

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitlib.book.widgets import plot_training_curves

    fig, ax = plt.subplots()
    plot_training_curves(ax, {"a": history, "b": history}, "t")
    assert len(ax.lines) == 2
    assert list(ax.lines[0].get_ydata()) == [r["test_acc"] for r in history]
    plt.close(fig)


def test_navit_checkpoints_round_trip_and_a_function_rate_is_refused(tmp_path):
    torch.manual_seed(0)
    model = NaViT(image_size=16, patch_size=4, num_classes=3, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64,
                  channels=1, token_dropout_prob=0.25).eval()
    path = save_checkpoint(tmp_path / "navit.safetensors", model)
    again = load_model(path)
    images = [torch.randn(1, 16, 8), torch.randn(1, 8, 8)]
    with torch.no_grad():
        assert torch.allclose(again(images), model(images), atol=1e-6)
    model.token_dropout_prob = model.config["token_dropout_prob"] = abs  # any function of (h, w) is not JSON
    with pytest.raises(ValueError, match="as JSON"):
        save_checkpoint(tmp_path / "f.safetensors", model)
