"""How NaViT packs images of many sizes into sequences, planned on the host from shapes alone.

* :func:`kept_tokens`: how many tokens an image keeps under token dropout (the nominal share in
  expectation, rounded at random), beside vit-pytorch's truncating rule (:func:`floor_kept_tokens`)
  and the average count under either (:func:`expected_kept_tokens`);
* :func:`pack_sequences` (first-fit decreasing with a balancing search) and :func:`pack_greedy`
  (vit-pytorch's in-order filling), pure functions of the images' token counts, and
  :func:`padding_fraction` to compare them;
* :class:`PackPlan` and :func:`pack_plan`: where every token of a batch goes in the packed
  ``(sequences, slots)`` batch, as small index tensors built without waiting for the device.

:class:`~vitlib.models.na_vit.NaViT` uses them; they hold no parameters.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch

__all__ = ["kept_tokens", "max_kept_tokens", "TOKEN_DROPOUT_ROUNDINGS", "check_token_dropout_rounding",
           "floor_kept_tokens", "expected_kept_tokens", "pack_sequences", "pack_greedy", "padding_fraction",
           "PackPlan", "pack_plan"]


# ----- token dropout: how many tokens an image keeps ----------------------------------------------


def kept_tokens(tokens: int, token_dropout_prob: float, u: float) -> int:
    """Tokens an image of ``tokens`` patches keeps under token dropout at ``token_dropout_prob``
    (the rate), given ``u`` drawn uniformly from [0, 1): ``floor(tokens * (1 - rate) + u)``, at least 1.

    Rounding at random this way makes the applied rate the nominal one in expectation: an image of
    4 tokens at rate 0.3 keeps 3 tokens 80% of the time and 2 otherwise, 2.8 on average, where
    truncating (``int(4 * 0.7)``, vit-pytorch's rule) always keeps 2, a rate of 0.5. Only an image
    so small that it would keep less than one token on average keeps more than the nominal share.
    """
    return max(1, min(tokens, math.floor(tokens * (1.0 - token_dropout_prob) + u)))


def max_kept_tokens(tokens: int, token_dropout_prob: float) -> int:
    """The most tokens :func:`kept_tokens` can keep: ``ceil(tokens * (1 - rate))``, at least 1 (a
    bound for ``group_max_seq_len``)."""
    return max(1, min(tokens, math.ceil(tokens * (1.0 - token_dropout_prob))))


#: How token dropout rounds an image's kept share ``tokens * (1 - rate)`` to whole tokens:
#: ``"stochastic"`` rounds up with probability the fractional part (:func:`kept_tokens`: the nominal
#: rate in expectation), ``"floor"`` truncates (:func:`floor_kept_tokens`, vit-pytorch's rule).
TOKEN_DROPOUT_ROUNDINGS = ("stochastic", "floor")


def check_token_dropout_rounding(token_dropout_rounding) -> str:
    """``token_dropout_rounding`` if it is one of :data:`TOKEN_DROPOUT_ROUNDINGS`, else ValueError."""
    if not isinstance(token_dropout_rounding, str) or token_dropout_rounding not in TOKEN_DROPOUT_ROUNDINGS:
        raise ValueError("token_dropout_rounding must be 'stochastic' (round at random: the nominal rate in "
                         "expectation) or 'floor' (vit-pytorch's max(1, int(tokens * (1 - rate)))); received "
                         f"{token_dropout_rounding!r}")
    return token_dropout_rounding


def floor_kept_tokens(tokens: int, token_dropout_prob: float) -> int:
    """Tokens an image of ``tokens`` patches keeps under vit-pytorch's rule at ``token_dropout_prob``:
    ``max(1, int(tokens * (1 - rate)))``. Truncating drops more than the nominal share: an image of
    4 tokens at rate 0.3 keeps 2 (a rate of 0.5)."""
    return max(1, int(tokens * (1.0 - token_dropout_prob)))


def expected_kept_tokens(tokens: int, token_dropout_prob: float, rounding: str = "stochastic") -> float:
    """Tokens an image of ``tokens`` patches keeps on average under token dropout at
    ``token_dropout_prob``, rounded by ``rounding`` (one of :data:`TOKEN_DROPOUT_ROUNDINGS`).

    Stochastic rounding keeps ``floor(x + u)`` of ``x = tokens * (1 - rate)``, ``x`` on average, and
    an image with ``x < 1`` always keeps one token: exactly ``max(1, x)``. Truncation keeps
    :func:`floor_kept_tokens`, every time."""
    if check_token_dropout_rounding(rounding) == "floor":
        return float(floor_kept_tokens(tokens, token_dropout_prob))
    return max(1.0, tokens * (1.0 - token_dropout_prob))


# ----- packing (pure functions of the lengths) ---------------------------------------------------


def _check_lengths(lengths: Sequence[int], max_len: int | None) -> None:
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise ValueError(f"max_len must be a positive int; received {max_len!r}")
    for i, n in enumerate(lengths):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"lengths must be positive ints; received {n!r} at index {i}")
        if max_len is not None and n > max_len:
            raise ValueError(f"every length must be at most max_len={max_len}; received {n} at index {i}")


def _first_fit(order: list[int], lengths: Sequence[int], capacity: int, limit: int | None = None):
    """First fit of the items in ``order`` into sequences of ``capacity``: each goes into the first
    sequence with room, else opens one. None as soon as more than ``limit`` sequences are needed."""
    groups: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        for g, free in enumerate(room):
            if n <= free:
                groups[g].append(i)
                room[g] -= n
                break
        else:
            if limit is not None and len(groups) == limit:
                return None
            groups.append([i])
            room.append(capacity - n)
    return groups


def _padded_slots(lengths: Sequence[int], groups: list[list[int]]) -> int:
    return len(groups) * max(sum(lengths[i] for i in g) for g in groups)


def pack_sequences(lengths: Sequence[int], max_len: int, *, search: int = 4) -> list[list[int]]:
    """Pack sequences of the given lengths into sequences of at most ``max_len`` so that the padded
    batch (packed sequences times the longest of them) holds few padding slots.

    First fit decreasing (FFD) takes the sequences longest first and puts each into the first packed
    sequence with room: long ones placed first leave gaps that short ones fill, where filling in
    input order (:func:`pack_greedy`) closes a packed sequence as soon as the next one does not fit.
    FFD needs few packed sequences (at most ``11/9`` of the fewest possible, plus one), but the
    padded batch also depends on the longest packed sequence. So, like the MULTIFIT algorithm, for
    ``G`` = FFD's count of packed sequences and up to ``search`` more, bisection finds the smallest
    capacity at which FFD needs at most ``G``, which balances the sequences; the packing with the
    fewest padded slots wins. The in-order packing competes too: on random cases it pads less than
    this search about once in two thousand, by a fraction of a percent, so the result never pads
    more than :func:`pack_greedy`'s. The work is ``O(n * G)`` per FFD pass and at most about
    ``search * log2(max_len)`` passes, all on Python ints.

    Returns lists of indices into ``lengths`` (each index exactly once), longest first within a list
    (in input order when the in-order packing wins).
    """
    _check_lengths(lengths, max_len)
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda j: (-lengths[j], j))
    total, biggest = sum(lengths), max(lengths)
    best = _first_fit(order, lengths, max_len)
    cost = _padded_slots(lengths, best)
    first = len(best)
    for g in range(first, first + search + 1):
        lo, hi = max(biggest, -(-total // g)), min(max_len, cost // g)
        if g * lo >= cost:  # no packing into g sequences can have fewer padded slots
            break
        found = None
        while lo <= hi:
            mid = (lo + hi) // 2
            candidate = _first_fit(order, lengths, mid, limit=g)
            if candidate is None:
                lo = mid + 1
            else:
                found, hi = candidate, mid - 1
        if found is not None and _padded_slots(lengths, found) < cost:
            best, cost = found, _padded_slots(lengths, found)
    greedy = pack_greedy(lengths, max_len)
    return greedy if _padded_slots(lengths, greedy) < cost else best


def pack_greedy(lengths: Sequence[int], max_len: int) -> list[list[int]]:
    """vit-pytorch's packing: in input order, start a new packed sequence whenever the next one
    does not fit in the current. For comparison with :func:`pack_sequences`."""
    _check_lengths(lengths, max_len)
    groups: list[list[int]] = []
    used = max_len  # forces a first group
    for i, n in enumerate(lengths):
        if used + n > max_len:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += n
    return groups


def padding_fraction(lengths: Sequence[int], groups: Sequence[Sequence[int]]) -> float:
    """Share of a packed batch that is padding: padded slots over all slots.

    The batch has one row per group, each as long as the longest group, so it holds
    ``len(groups) * longest`` slots of which ``sum(lengths)`` are tokens.
    """
    _check_lengths(lengths, None)
    placed = sorted(i for g in groups for i in g)
    if placed != list(range(len(lengths))):
        raise ValueError(f"groups must hold every index of lengths (0..{len(lengths) - 1}) exactly once; "
                         f"received {[list(g) for g in groups]!r}")
    if not lengths:
        return 0.0
    longest = max(sum(lengths[i] for i in g) for g in groups)
    return 1.0 - sum(lengths) / (len(groups) * longest)


# ----- the host-side plan ------------------------------------------------------------------------


@dataclass
class PackPlan:
    """Where every token of a batch of images goes, computed on the host from the images' shapes.

    Tokens are numbered image after image (input order), row-major within an image; ``T`` tokens
    in all, ``K`` of them kept after token dropout (``K == T`` without), ``N`` images packed into
    ``G`` sequences of ``L`` slots each, at most ``Q`` images per sequence.

    ``rows``, ``cols`` (T,): each token's patch row and column. ``image_of_token`` (T,): its image.
    ``keep`` (K,) or None: which tokens survive token dropout, as positions in an order where each
    image's tokens are shuffled but stay in their image's range (see :meth:`NaViT.forward_packed`).
    ``dest`` (K,): each kept token's slot in the flattened ``(G * L)`` packed batch. ``ids`` (G, L):
    the position of each slot's image within its sequence, -1 for padding. ``empty_queries`` (G, Q,
    bool): pooling slots with no image. ``out_index`` (N,): each image's row among the ``G * Q``
    pooled vectors. ``lengths`` and ``groups`` are the kept tokens per image and the images of each
    sequence, as Python ints.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    image_of_token: torch.Tensor
    keep: torch.Tensor | None
    dest: torch.Tensor
    ids: torch.Tensor
    empty_queries: torch.Tensor
    out_index: torch.Tensor
    lengths: tuple[int, ...]
    groups: tuple[tuple[int, ...], ...]

    def to(self, device: torch.device | str) -> "PackPlan":
        """The same plan with its tensors on ``device`` (copied without waiting for the device)."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        return PackPlan(**moved)


def pack_plan(grids: Sequence[tuple[int, int]], lengths: Sequence[int], groups: Sequence[Sequence[int]]) -> PackPlan:
    """Build the :class:`PackPlan` of images with patch grids ``grids`` (rows, columns), keeping
    ``lengths[i]`` tokens of image ``i`` (at most its number of patches), packed as ``groups``
    (lists of image indices, each image exactly once). CPU tensors, built without Python loops
    over tokens."""
    n = len(grids)
    counts_list = [gh * gw for gh, gw in grids]
    if len(lengths) != n or any(not 1 <= k <= c for k, c in zip(lengths, counts_list)):
        raise ValueError(f"lengths must give, for each of the {n} images, between 1 and its number of patches "
                         f"{counts_list}; received {list(lengths)}")
    if sorted(i for g in groups for i in g) != list(range(n)) or any(len(g) == 0 for g in groups):
        raise ValueError(f"groups must be non-empty and hold every image index 0..{n - 1} exactly once; "
                         f"received {[list(g) for g in groups]!r}")
    total, kept_total = sum(counts_list), sum(lengths)
    counts = torch.tensor(counts_list)
    kept = torch.tensor(list(lengths))
    widths = torch.tensor([gw for _, gw in grids])
    image = torch.arange(n)

    image_of_token = image.repeat_interleave(counts, output_size=total)
    start = counts.cumsum(0) - counts  # each image's first token
    local = torch.arange(total) - start[image_of_token]
    rows, cols = local // widths[image_of_token], local % widths[image_of_token]

    image_of_kept = image.repeat_interleave(kept, output_size=kept_total)
    kept_start = kept.cumsum(0) - kept
    keep = None
    if kept_total < total:  # the first lengths[i] positions of image i's (shuffled) range
        keep = torch.arange(kept_total) + (start - kept_start)[image_of_kept]

    seq_len = max(sum(lengths[i] for i in g) for g in groups)
    queries = max(len(g) for g in groups)
    group_of, slot_of, offset_of = [0] * n, [0] * n, [0] * n
    for gi, g in enumerate(groups):  # a loop over images, not tokens
        offsets = itertools.accumulate((lengths[i] for i in g), initial=0)
        for si, (i, off) in enumerate(zip(g, offsets)):
            group_of[i], slot_of[i], offset_of[i] = gi, si, off
    first_slot = torch.tensor([group_of[i] * seq_len + offset_of[i] for i in range(n)])
    dest = torch.arange(kept_total) + (first_slot - kept_start)[image_of_kept]
    ids = torch.full((len(groups) * seq_len,), -1, dtype=torch.long)
    ids[dest] = torch.tensor(slot_of)[image_of_kept]
    sizes = torch.tensor([len(g) for g in groups])
    return PackPlan(
        rows=rows,
        cols=cols,
        image_of_token=image_of_token,
        keep=keep,
        dest=dest,
        ids=ids.view(len(groups), seq_len),
        empty_queries=torch.arange(queries)[None, :] >= sizes[:, None],
        out_index=torch.tensor([group_of[i] * queries + slot_of[i] for i in range(n)]),
        lengths=tuple(lengths),
        groups=tuple(tuple(g) for g in groups),
    )


def _shuffle_within(segment: torch.Tensor) -> torch.Tensor:
    """A random permutation of ``range(len(segment))`` that shuffles positions within each run of
    equal values of the non-decreasing ``segment`` and keeps the runs in place: two sorts, no loop."""
    perm = torch.rand(segment.shape, device=segment.device).argsort()
    return perm[segment[perm].argsort(stable=True)]
