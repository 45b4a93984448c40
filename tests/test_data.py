import pickle
import re
import socket
import tarfile
import time

import numpy as np
import pytest
import torch

from vitlib import data as vdata
from vitlib.data import cifar10, digits, image_folder, load_dataset, stratified_split, train_augment


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection fails at once, as on a machine without a network."""
    def refuse(*args, **kwargs):
        raise OSError("network access blocked by the test")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_digits_split_is_fixed_stratified_and_normalised(no_network):
    a, b = digits(image_size=16, seed=0), digits(image_size=16, seed=0)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.train.labels, b.train.labels)
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == 360
    assert a.train.images.shape[1:] == (1, 16, 16) and a.num_classes == 10
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: about 36 of each digit
    assert abs(a.train.images.mean().item()) < 1e-4 and abs(a.train.images.std().item() - 1) < 1e-3
    other = digits(image_size=16, seed=1)
    assert not torch.equal(other.test.labels, a.test.labels)


def test_stratified_split_keeps_each_class_in_proportion():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    train, test = stratified_split(labels, 0.1, seed=0)
    assert len(test) == 10 and len(train) == 90  # not 11: 0.9 * 100 rounds to 90.00000000000001
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    assert np.bincount(labels[test]).tolist() == [5, 3, 2]
    again, other = stratified_split(labels, 0.1, seed=0)[1], stratified_split(labels, 0.1, seed=1)[1]
    assert np.array_equal(again, test) and not np.array_equal(other, test)
    _, test = stratified_split(labels, 0.25, seed=0)  # 12.5, 7.5, 5: the larger remainder first
    assert np.bincount(labels[test]).tolist() == [13, 7, 5]
    with pytest.raises(ValueError, match="received 0.0"):
        stratified_split(labels, 0.0)


def test_digits_sizes_and_channels():
    assert digits(image_size=8).train.images.shape[1:] == (1, 8, 8)
    assert digits(image_size=32, channels=3).test.images.shape[1:] == (3, 32, 32)
    with pytest.raises(ValueError, match="received 2"):
        digits(channels=2)
    with pytest.raises(ValueError, match="received 1.5"):
        digits(test_fraction=1.5)


def _write_cifar(folder, n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for name in names:
        n = n_test if name == "test_batch" else n_train
        batch = {"batch_label": name, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist(), "filenames": [f"{name}_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch))
        written[name] = batch
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
            "num_cases_per_batch": n_train, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return written


def test_cifar10_reads_local_files(tmp_path, no_network):
    written = _write_cifar(tmp_path / "cifar-10-batches-py")
    split = cifar10(root=tmp_path, download=False)
    assert len(split.train) == 30 and len(split.test) == 4 and split.classes[3] == "cat"
    x, y = split.test[2]
    assert x.shape == (3, 32, 32) and y.item() == written["test_batch"]["labels"][2]
    raw = torch.tensor(written["test_batch"]["data"][2].reshape(3, 32, 32)).float() / 255
    expected = (raw - torch.tensor(vdata.CIFAR10_MEAN).view(3, 1, 1)) / torch.tensor(vdata.CIFAR10_STD).view(3, 1, 1)
    torch.testing.assert_close(x, expected)
    xt, _ = split.train[0]
    assert xt.shape == (3, 32, 32)


def test_cifar10_unpacks_an_archive_placed_in_root(tmp_path, no_network):
    src = tmp_path / "src"
    _write_cifar(src / "cifar-10-batches-py")
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    split = cifar10(root=root, url="https://mirror.invalid/cifar-10-python.tar.gz", image_size=16)
    assert len(split.test) == 4 and split.test[0][0].shape == (3, 16, 16)


def test_cifar10_without_network_fails_fast_with_instructions(tmp_path, no_network):
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"cannot be reached.*cifar-10-python\.tar\.gz.*VITLIB_MODE=quick"):
        cifar10(root=tmp_path)
    assert time.perf_counter() - t0 < 5


def test_cifar10_missing_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        cifar10(root=tmp_path, download=False)


def test_data_files_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        vdata._read_batch(pickle.dumps({"data": Evil()}))


def test_image_folder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    split = image_folder(tmp_path, image_size=16, test_fraction=0.2)
    assert split.classes == ["cats", "dogs"] and len(split.train) == 8 and len(split.test) == 2
    assert split.train[0][0].shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError, match="one sub-directory per class"):
        image_folder(tmp_path / "nope")


def _image_classes(root, n=5, broken=()):
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    good = (root / "cats" / "0.png").read_bytes()
    for name in broken:  # one truncated PNG, one that is not an image at all
        path = root / "dogs" / name
        path.write_bytes(good[: len(good) // 2] if name.startswith("half") else b"not an image")
    return root


def test_image_folder_names_unreadable_images_when_built(tmp_path):
    root = _image_classes(tmp_path, broken=("half.png", "junk.png"))
    with pytest.raises(ValueError, match=r"2 of 12 images .* cannot be read: .*dogs/half\.png .*dogs/junk\.png"):
        image_folder(root, image_size=16)
    with pytest.warns(UserWarning, match=r"leaving out 2 unreadable image\(s\).*half\.png.*junk\.png"):
        split = image_folder(root, image_size=16, skip_unreadable=True)
    assert len(split.train) + len(split.test) == 10
    assert all(split.train[i][0].shape == (3, 16, 16) for i in range(len(split.train)))  # every image loads
    assert vdata.unreadable_images([root / "cats" / "0.png"]) == {}


def test_cli_names_an_unreadable_image_and_skips_it_when_asked(tmp_path, capsys):
    from vitlib import train as vtrain

    root = _image_classes(tmp_path, n=4, broken=("junk.png",))
    argv = ["--dataset", str(root), "--image-size", "8", "--dim", "16", "--depth", "1", "--epochs", "1"]
    with pytest.raises(SystemExit) as exit_:
        vtrain.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "junk.png" in err and "--skip-unreadable" in err and "Traceback" not in err
    with pytest.warns(UserWarning, match="junk.png"):
        assert vtrain.main([*argv, "--skip-unreadable"]) == 0
    counts = re.search(r"(\d+) train / (\d+) test images", capsys.readouterr().out).groups()
    assert sum(map(int, counts)) == 8  # nine files, one left out


def test_mixed_resolution_takes_cifar10_without_its_augmentation(tmp_path, no_network):
    from vitlib.data import ImageListDataset, mixed_resolution

    _write_cifar(tmp_path / "cifar-10-batches-py")
    split = cifar10(tmp_path, download=False)
    mixed = mixed_resolution(split, sizes=[16, 32], seed=0)
    assert isinstance(mixed.train, ImageListDataset) and len(mixed.train) == len(split.train)
    assert {tuple(img.shape) for img in mixed.train.images} == {(3, 16, 16), (3, 32, 32)}
    i = next(i for i, img in enumerate(mixed.train.images) if img.shape[-1] == 32)
    mean, std = torch.tensor(vdata.CIFAR10_MEAN).view(3, 1, 1), torch.tensor(vdata.CIFAR10_STD).view(3, 1, 1)
    expected = (split.train.images[i].float() / 255 - mean) / std  # normalised, neither cropped nor flipped
    assert torch.allclose(mixed.train.images[i], expected, atol=1e-6)
    assert mixed.image_size == (32, 32)


def test_load_dataset_names():
    assert load_dataset("digits", image_size=8).image_size == (8, 8)
    with pytest.raises(ValueError, match="received 'mnist'"):
        load_dataset("mnist")


def test_train_augment_keeps_shape():
    x = torch.randn(3, 16, 16)
    assert train_augment(16, flip=False)(x).shape == (3, 16, 16)


def test_default_workers():
    assert vdata.default_workers("cpu") >= 0
    assert vdata.default_workers("cuda") >= 1


def test_quick_mode_trains_offline(no_network, monkeypatch):
    """The quick recipe's whole path (bundled data, model, one epoch, evaluation) needs no network."""
    from vitlib import train as vtrain

    monkeypatch.setitem(vtrain.QUICK_RECIPE["fit"], "epochs", 1)
    model, history, split = vtrain.train_recipe(progress=False)
    assert split.name == "digits" and 0.0 <= history.final["test_acc"] <= 1.0
