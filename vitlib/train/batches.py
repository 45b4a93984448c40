"""Batches of an epoch, the same order on every process: one permutation drawn from ``(seed,
epoch)``, cut into global batches, each process taking its slice (data-parallel training).

In-memory data (:class:`~vitlib.data.TensorImageDataset`, or :class:`~vitlib.data.ImageListDataset`
for images of many sizes) is batched by indexing on the device, with no per-sample Python; other
datasets go through a DataLoader that loads only this process's slice.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence, Union

import torch
from torch.utils.data import Dataset

from ..data import ImageListDataset, TensorImageDataset, make_loader
from .distributed import part_bounds

__all__ = ["Inputs", "global_batch_sizes", "ShardedBatches", "iterate_batches"]

#: ``x`` of a batch: a tensor of images, or a list of ``(C, H, W)`` images of different sizes.
Inputs = Union[torch.Tensor, Sequence[torch.Tensor]]


def global_batch_sizes(n: int, batch_size: int, processes: int = 1) -> list[int]:
    """The sizes of the global batches of an epoch of ``n`` images: full batches, then the rest,
    left out when it has fewer images than there are processes (each must take part in a step)."""
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    return [s for s in sizes if s >= processes]


class ShardedBatches(torch.utils.data.Sampler):
    """Index lists of this process's slices of the global batches of one epoch: the order is
    one permutation drawn from ``generator`` (the same on every process), cut into global batches
    of ``batch_size`` (:func:`global_batch_sizes`), and process ``rank`` of ``processes`` takes the
    ``rank``-th of near-equal consecutive slices of each (:func:`~vitlib.train.distributed.part_bounds`)."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
                 rank: int = 0, processes: int = 1) -> None:
        if not 0 <= rank < processes:
            raise ValueError(f"rank must be in [0, {processes}); received {rank}")
        self.n, self.batch_size, self.shuffle, self.generator = n, batch_size, shuffle, generator
        self.rank, self.processes = rank, processes

    def global_batches(self) -> Iterator[torch.Tensor]:
        """The indices of each global batch, in order."""
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        start = 0
        for size in global_batch_sizes(self.n, self.batch_size, 1):
            if size >= self.processes:
                yield order[start:start + size]
            start += size

    def part(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's slice of a global batch."""
        a, b = part_bounds(len(batch), self.rank, self.processes)
        return batch[a:b]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield self.part(batch).tolist()

    def __len__(self) -> int:
        return len(global_batch_sizes(self.n, self.batch_size, self.processes))


def iterate_batches(dataset: Dataset, batch_size: int, *, shuffle: bool, device: torch.device,
                    generator: torch.Generator | None = None, cache: dict | None = None,
                    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                    shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[Inputs, torch.Tensor]]:
    """Batches ``(x, y)`` of ``dataset`` on ``device``, shuffled by ``generator``, augmented by
    ``augment(x, generator)``, and with ``shard=(rank, processes)`` only this process's slice of
    each global batch of ``batch_size`` (:class:`ShardedBatches`).

    In-memory data (:class:`~vitlib.data.TensorImageDataset`) is moved to the device once (kept in
    ``cache`` across epochs) and batched by indexing; :class:`~vitlib.data.ImageListDataset` gives
    lists of images; any other dataset goes through a DataLoader, which then loads only this
    process's slices. The order is one permutation drawn from ``generator``. In-memory data are
    augmented as whole global batches before the slicing, so that every image is shifted as it
    would be in one process; a DataLoader's batches are augmented per process.
    """
    cache = {} if cache is None else cache
    rank, processes = shard
    batches = ShardedBatches(len(dataset), batch_size, shuffle=shuffle, generator=generator, rank=rank,
                             processes=processes)
    if isinstance(dataset, (TensorImageDataset, ImageListDataset)):
        key = id(dataset)
        if key not in cache:  # move once, then batch by indexing
            images = dataset.images
            images = images.to(device) if isinstance(images, torch.Tensor) else [img.to(device) for img in images]
            cache[key] = (images, dataset.labels.to(device))
        images, labels = cache[key]
        whole = augment is not None and processes > 1  # augment the global batch, then slice it
        for idx in batches.global_batches():
            idx = idx if whole else batches.part(idx)
            if isinstance(images, torch.Tensor):
                idx = idx.to(device)
                x, y = images[idx], labels[idx]
            else:  # images of different sizes: a batch is a list
                x, y = [images[j] for j in idx.tolist()], labels[idx.to(device)]
            if augment is not None:
                x = augment(x, generator)
            if whole:
                a, b = part_bounds(len(y), rank, processes)
                x, y = x[a:b], y[a:b]
            yield x, y
    else:
        if processes > 1:
            loader = make_loader(dataset, batch_size, shuffle=False, device=device, generator=generator,
                                 batch_sampler=batches)
        else:
            loader = make_loader(dataset, batch_size, shuffle=shuffle, device=device, generator=generator)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            yield (augment(x, generator) if augment is not None else x), y
