"""Data sets and loaders: the bundled digits (quick mode), CIFAR-10 (full mode), your own images.

* :func:`digits`: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, 10 classes).
  It ships inside scikit-learn, so quick mode never touches the network.
* :func:`cifar10`: CIFAR-10, downloaded once into :func:`vitlib.locations.data_root` (``$VITLIB_DATA``,
  a checkout's ``data/``, or the user's cache folder; never the installed package). Without a
  network it fails at once with instructions; the archive's batches are read with a restricted
  unpickler that accepts plain data and NumPy arrays only.
* :func:`image_folder`: a folder per class of your own images (torchvision's ImageFolder).

All three return :class:`DataSplit` objects (train and test datasets, class names, input shape);
:func:`train_augment` is the standard augmentation; :func:`make_loader` picks workers per device.
"""
from __future__ import annotations

import io
import os
import pickle
import socket
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from . import smoke
from .locations import data_root

__all__ = ["DataSplit", "TensorImageDataset", "ImageListDataset", "mixed_resolution", "digits",
           "stratified_split", "first_images", "cifar10", "image_folder", "unreadable_images",
           "load_dataset", "default_image_size", "train_augment", "make_loader", "data_root", "CIFAR10_URL"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class TensorImageDataset(Dataset):
    """Images held in memory as one float tensor ``(N, C, H, W)`` with integer labels ``(N,)``.

    The training loop batches these by indexing (no per-sample Python), which on a small CPU is
    most of the difference between a one-minute and a five-minute chapter.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"expected images (N, C, H, W) and labels (N,); received {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


class ImageListDataset(Dataset):
    """Images of different sizes, a list of ``(C, H, W)`` float tensors, with integer labels ``(N,)``.

    For models that take a list of images (NaViT): the training loop batches them by indexing, and a
    batch is a list of images, not a stacked tensor.
    """

    def __init__(self, images: list[torch.Tensor], labels: torch.Tensor) -> None:
        if not isinstance(images, (list, tuple)) or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"expected a list of N (C, H, W) images and labels (N,); received {type(images).__name__} "
                             f"of length {len(images) if isinstance(images, (list, tuple)) else '?'} and labels of shape "
                             f"{tuple(labels.shape)}")
        for i, img in enumerate(images):
            if not isinstance(img, torch.Tensor) or img.ndim != 3:
                raise ValueError(f"image {i} must be a (C, H, W) tensor; received "
                                 f"{tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__}")
        self.images, self.labels = list(images), labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def mixed_resolution(split: "DataSplit", sizes, seed: int = 0) -> "DataSplit":
    """A copy of an in-memory ``split`` whose images are each resized (bilinear) to a size drawn at
    random from ``sizes`` (ints or ``(height, width)`` pairs), as :class:`ImageListDataset`: the
    native-resolution workload of NaViT. ``image_size`` of the result is the largest size.

    In-memory means the digits (:class:`TensorImageDataset`) or CIFAR-10 (:func:`cifar10`), whose
    images are taken normalised and without the per-sample training augmentation."""
    from .layers import pair

    sizes = [pair(s, "size") for s in sizes]
    if not sizes:
        raise ValueError("mixed_resolution needs at least one size; received none")
    gen = torch.Generator().manual_seed(seed)
    parts = {}
    for name in ("train", "test"):
        ds = getattr(split, name)
        if isinstance(ds, TensorImageDataset):
            image = ds.images.__getitem__
        elif isinstance(ds, _AugmentedTensors):
            image = ds.plain
        else:
            raise ValueError(f"mixed_resolution needs in-memory data (the digits or CIFAR-10); received "
                             f"{type(ds).__name__} for {name}")
        picks = torch.randint(len(sizes), (len(ds),), generator=gen).tolist()
        images = [F.interpolate(image(i)[None], size=sizes[k], mode="bilinear", align_corners=False)[0]
                  for i, k in enumerate(picks)]
        parts[name] = ImageListDataset(images, ds.labels)
        parts[name].planned_len = getattr(ds, "planned_len", len(ds))  # the smoke scale's full size
    largest = (max(h for h, _ in sizes), max(w for _, w in sizes))
    return DataSplit(f"{split.name} at {'/'.join(f'{h}x{w}' for h, w in sizes)} px", parts["train"], parts["test"],
                     split.classes, largest, split.channels)


@dataclass
class DataSplit:
    """A train/test pair with what a model needs to know about it."""

    name: str
    train: Dataset
    test: Dataset
    classes: list[str]
    image_size: tuple[int, int]
    channels: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"DataSplit({self.name}: {len(self.train)} train / {len(self.test)} test images, "
                f"{self.channels}x{self.image_size[0]}x{self.image_size[1]}, {self.num_classes} classes)")


def first_images(dataset: Dataset, n: int):
    """The first ``n`` images of ``dataset`` as a model takes them (a normalised batch tensor, or a
    list for a list dataset) and their labels."""
    if isinstance(dataset, (TensorImageDataset, ImageListDataset)):
        images = dataset.images[:n]
        return (list(images) if isinstance(images, (list, tuple)) else images), dataset.labels[:n]
    pairs = [dataset[i] for i in range(min(n, len(dataset)))]
    return torch.stack([p[0] for p in pairs]), torch.tensor([int(p[1]) for p in pairs])


# ---------------------------------------------------------------------------------------------
# digits (quick mode)


def stratified_split(labels, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``, both sorted, with ``ceil(test_fraction * N)`` test items, each class
    in the test set in proportion to its share of ``labels`` (largest remainders take the items
    that rounding leaves), drawn at random within each class by ``seed``: the same seed gives the
    same split on any machine."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); received {test_fraction}")
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    n_test = int(np.ceil(test_fraction * len(labels) - 1e-9))  # 0.9 * 100 is 90.00000000000001
    ideal = n_test * counts / len(labels)
    take = np.floor(ideal).astype(int)
    take[np.argsort(-(ideal - take), kind="stable")[: n_test - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as ``(images (N, 8, 8) in 0..16, labels)``, read from the file scikit-learn
    ships, without importing scikit-learn (seconds of imports that a chapter need not pay); through
    ``sklearn.datasets.load_digits`` where that file is not where it was."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        file = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if file.is_file():
            with gzip.open(file, "rt") as f:
                table = np.loadtxt(f, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def digits(image_size: int = 16, test_fraction: float = 0.2, seed: int = 0, channels: int = 1) -> DataSplit:
    """scikit-learn's handwritten digits, resized to ``image_size`` and normalised.

    The split is stratified and fixed by ``seed`` (:func:`stratified_split`): the same seed gives
    the same test set on any machine. Pixel statistics for normalisation come from the training
    images only. ``channels=3`` repeats the grey channel for models built for colour input.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); received {test_fraction}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; received {channels}")
    pixels, targets = _digits_arrays()
    images = torch.tensor(pixels, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    labels = torch.tensor(targets, dtype=torch.long)
    idx_train, idx_test = stratified_split(targets, test_fraction, seed)
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    train_images = images[idx_train]
    mean, std = train_images.mean(), train_images.std()
    images = ((images - mean) / std).repeat(1, channels, 1, 1)
    return DataSplit(
        name="digits",
        train=TensorImageDataset(images[idx_train], labels[idx_train]),
        test=TensorImageDataset(images[idx_test], labels[idx_test]),
        classes=[str(c) for c in range(10)],
        image_size=(image_size, image_size),
        channels=channels,
    )


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (full mode)


class _DataUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays; refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_batch(raw: bytes) -> dict:
    return _DataUnpickler(io.BytesIO(raw), encoding="latin1").load()


def _read_cifar_dir(folder: Path, files: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    data, labels = [], []
    for name in files:
        batch = _read_batch((folder / name).read_bytes())
        data.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch["labels"])
    return torch.from_numpy(np.concatenate(data)), torch.tensor(labels, dtype=torch.long)


def _network_reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _download_cifar10(root: Path, url: str) -> None:
    """Download and unpack the CIFAR-10 archive into ``root``; fail fast without a network."""
    from torchvision.datasets.utils import check_integrity, download_url

    archive = root / Path(urlparse(url).path).name
    if not archive.exists():
        if not _network_reachable(url):
            raise RuntimeError(
                f"CIFAR-10 is not in {root} and {urlparse(url).hostname} cannot be reached. Download "
                f"{url} on a machine with a network and put it in {root}/ (or unpack it there, giving "
                f"{root}/cifar-10-batches-py/). Quick mode needs no download: VITLIB_MODE=quick."
            )
        root.mkdir(parents=True, exist_ok=True)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)
        try:
            download_url(url, str(root), md5=CIFAR10_MD5)
        finally:
            socket.setdefaulttimeout(previous)
    # A generated archive in the real format (the full-mode rehearsal) names its own checksum.
    md5 = os.environ.get("VITLIB_TEST_CIFAR10_MD5") or CIFAR10_MD5
    if url == CIFAR10_URL and not check_integrity(str(archive), md5):
        raise RuntimeError(f"{archive} is corrupt (MD5 mismatch); delete it and try again")
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):  # refuse absolute paths and links out of root
            tar.extractall(root, filter="data")
        else:  # pragma: no cover - Python without the extraction filters
            tar.extractall(root)


class _AugmentedTensors(Dataset):
    """uint8 images in memory, converted (and augmented in training) per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, augment: Callable | None,
                 size: int) -> None:
        self.images, self.labels, self.augment, self.size = images, labels, augment, size
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def _resized(self, i: int) -> torch.Tensor:
        x = self.images[i].float() / 255.0
        if x.shape[-1] != self.size:
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return x

    def plain(self, i: int) -> torch.Tensor:
        """Image ``i`` resized and normalised, without augmentation."""
        return (self._resized(i) - self.mean) / self.std

    def __getitem__(self, i):
        x = self._resized(i)
        if self.augment is not None:
            x = self.augment(x)
        return (x - self.mean) / self.std, self.labels[i]


def cifar10(root: str | Path | None = None, image_size: int = 32, download: bool = True, augment: bool = True,
            url: str = CIFAR10_URL) -> DataSplit:
    """CIFAR-10 (50,000 train, 10,000 test colour images of 32x32) from ``root/cifar-10-batches-py``.

    Downloads the archive into ``root`` (default :func:`~vitlib.locations.data_root`) when missing
    and ``download`` is true.
    ``augment`` applies :func:`train_augment` to training images.
    """
    root = Path(root) if root is not None else data_root()
    folder = root / "cifar-10-batches-py"
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    if not all((folder / f).exists() for f in [*train_files, "test_batch", "batches.meta"]):
        if not download:
            raise FileNotFoundError(f"CIFAR-10 batches not found in {folder}; pass download=True or fetch {url}")
        _download_cifar10(root, url)
    xtr, ytr = _read_cifar_dir(folder, train_files)
    xte, yte = _read_cifar_dir(folder, ["test_batch"])
    planned, keep = (len(ytr), len(yte)), (smoke.TRAIN_IMAGES, smoke.TEST_IMAGES) if smoke.active() else (None, None)
    xtr, ytr, xte, yte = xtr[:keep[0]], ytr[:keep[0]], xte[:keep[1]], yte[:keep[1]]  # smoke: a few hundred
    meta = _read_batch((folder / "batches.meta").read_bytes())
    aug = train_augment(image_size, flip=True) if augment else None
    train = _AugmentedTensors(xtr, ytr, CIFAR10_MEAN, CIFAR10_STD, aug, image_size)
    test = _AugmentedTensors(xte, yte, CIFAR10_MEAN, CIFAR10_STD, None, image_size)
    train.planned_len, test.planned_len = planned
    return DataSplit(
        name="cifar10",
        train=train,
        test=test,
        classes=list(meta["label_names"]),
        image_size=(image_size, image_size),
        channels=3,
    )


# ---------------------------------------------------------------------------------------------
# your own images


def unreadable_images(paths: Sequence[str | Path]) -> dict[str, str]:
    """The files among ``paths`` that PIL cannot open and verify, each with the reason.

    ``Image.verify()`` reads a file's structure (headers, chunk checksums) without decoding the
    pixels: cheap enough to run over a whole folder when the data set is built, so that a broken
    file is named then and not inside a DataLoader worker halfway through an epoch.
    """
    from PIL import Image

    bad = {}
    for path in paths:
        try:
            with Image.open(path) as img:
                img.verify()
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
            bad[str(path)] = str(err).splitlines()[0] if str(err) else type(err).__name__
    return bad


def image_folder(root: str | Path, image_size: int = 224, test_fraction: float = 0.2, seed: int = 0,
                 augment: bool = True, skip_unreadable: bool = False) -> DataSplit:
    """A folder with one sub-folder of images per class, split into train and test by ``seed``.

    Uses ImageNet statistics for normalisation; images are resized and centre-cropped to
    ``image_size`` (train images get :func:`train_augment` on top when ``augment``). Every image is
    checked when the split is built (:func:`unreadable_images`): an unreadable one raises a
    ValueError naming it, or, with ``skip_unreadable=True``, is left out with a warning naming it.
    """
    import warnings

    from torchvision import datasets, transforms

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image_folder expects a directory with one sub-directory per class; {root} is not one")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    base = [transforms.Resize(image_size), transforms.CenterCrop(image_size), transforms.ToTensor()]
    plain = transforms.Compose([*base, transforms.Normalize(mean, std)])
    aug = train_augment(image_size, flip=True)
    train_tf = transforms.Compose([*base, aug, transforms.Normalize(mean, std)]) if augment else plain
    full_train = datasets.ImageFolder(str(root), transform=train_tf)
    full_test = datasets.ImageFolder(str(root), transform=plain)
    bad = unreadable_images([path for path, _ in full_train.samples])
    if bad:
        listing = "; ".join(f"{path} ({why})" for path, why in list(bad.items())[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        if not skip_unreadable:
            raise ValueError(f"image_folder: {len(bad)} of {len(full_train.samples)} images in {root} cannot be "
                             f"read: {listing}{more}; delete or replace them, or pass skip_unreadable=True "
                             "(command line: --skip-unreadable) to leave them out")
        warnings.warn(f"image_folder: leaving out {len(bad)} unreadable image(s) in {root}: {listing}{more}",
                      stacklevel=2)
        for ds in (full_train, full_test):
            ds.samples = [(path, target) for path, target in ds.samples if path not in bad]
            ds.imgs, ds.targets = ds.samples, [target for _, target in ds.samples]
    n = len(full_train)
    if n < 2:
        raise ValueError(f"image_folder needs at least 2 images; found {n} in {root}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = max(1, int(round(n * test_fraction)))
    return DataSplit(
        name=root.name,
        train=torch.utils.data.Subset(full_train, order[n_test:]),
        test=torch.utils.data.Subset(full_test, order[:n_test]),
        classes=full_train.classes,
        image_size=(image_size, image_size),
        channels=3,
    )


#: The image side :func:`load_dataset` uses when given none: per data set name, and for a folder.
DEFAULT_IMAGE_SIZES = {"digits": 16, "cifar10": 32, "folder": 224}


def default_image_size(name: str) -> int:
    """The image side :func:`load_dataset` gives data set ``name`` by default."""
    return DEFAULT_IMAGE_SIZES.get(name, DEFAULT_IMAGE_SIZES["folder"])


def load_dataset(name: str, image_size: int | None = None, **kwargs) -> DataSplit:
    """``"digits"``, ``"cifar10"`` or a path to an image folder (keywords go to :func:`digits`,
    :func:`cifar10` or :func:`image_folder`)."""
    size = image_size or default_image_size(name)
    if name == "digits":
        return digits(image_size=size, **kwargs)
    if name == "cifar10":
        return cifar10(image_size=size, **kwargs)
    if Path(name).is_dir():
        return image_folder(name, image_size=size, **kwargs)
    raise ValueError(f"dataset must be 'digits', 'cifar10' or an image folder path; received {name!r}")


# ---------------------------------------------------------------------------------------------
# augmentation and loaders


def train_augment(image_size: int, flip: bool = True, padding: int | None = None):
    """Standard light augmentation on a ``(C, H, W)`` tensor: a random crop after reflection
    padding (an eighth of the side by default) and, when ``flip``, a random horizontal flip.
    Digits are not flip-symmetric: use ``flip=False`` for them."""
    from torchvision import transforms

    pad = max(1, image_size // 8) if padding is None else padding
    steps = [transforms.RandomCrop(image_size, padding=pad, padding_mode="reflect")]
    if flip:
        steps.append(transforms.RandomHorizontalFlip())
    return transforms.Compose(steps)


def default_workers(device: torch.device | str) -> int:
    """DataLoader workers: none on a small CPU (workers compete with the model for cores), up to
    eight when a GPU does the compute and the CPU only decodes and augments."""
    device = torch.device(device)
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return min(8, max(1, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, device: torch.device | str = "cpu",
                generator: torch.Generator | None = None, num_workers: int | None = None,
                batch_sampler=None) -> DataLoader:
    """A DataLoader with workers and pinned memory chosen for ``device``; ``batch_sampler`` (lists
    of indices, e.g. one process's slices of global batches) replaces ``batch_size`` and ``shuffle``.
    Unshuffled, it seeds its workers from a generator of its own, never from torch's global one."""
    device = torch.device(device)
    workers = default_workers(device) if num_workers is None else num_workers
    generator = torch.Generator() if generator is None and (batch_sampler is not None or not shuffle) else generator
    common = dict(generator=generator, num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=False)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **common)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=False, **common)
