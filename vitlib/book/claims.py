"""The blog post's claims that the book tests, measured values with their spread, and the one
function that turns a measurement into a verdict.

A chapter measures, wraps what it measured in a :class:`Measured` (a ratio of interleaved timings
with :meth:`Measured.ratio`, an accuracy difference with :meth:`Measured.difference`, an exact
count with :meth:`Measured.exact`), and asks :func:`verdict` whether the claim's threshold is met.
The verdict is "holds" only when the whole spread clears the threshold, "does not hold" only when
the whole spread misses it, and "inconclusive on this machine" when the spread straddles it; with
one measurement per condition it can also say "holds only when ...". :func:`verdict_table` sets
the claims' own words beside what was measured.
"""
from __future__ import annotations

from typing import Mapping

from ..bench.measured import Measured

__all__ = ["CLAIMS", "VERDICTS", "Measured", "all_of", "epoch_speedup", "seed_difference", "verdict",
           "verdict_table"]

CLAIMS: dict[str, str] = {
    "C1": "SimpleViT (2-D sin-cos positions, mean pooling, no dropout) trains ~30% faster than ViT on "
          "ImageNet and keeps 98% of its accuracy",
    "C2": 'SimpleViT(image 256, patch 32, dim 512, depth 6, heads 8, mlp 1024) has "40% fewer parameters"',
    "C3": "SimpleViT: 22M params, 1.8x train speed, 2.5x inference speed, 79.6% top-1, against ViT-Base: "
          "86M params, 81.3% top-1",
    "C4": "LeViT's conv embedding and staged downsampling turn attention from O(n^2) into O(n)",
    "C5": "LeViT uses convolutions for its first four layers; 2x faster inference; small-object recognition +15%",
    "C6": "LeViT-384: 28M params, 2.2x train, 3.1x inference, 81.6% top-1",
    "C7": "CrossViT's two branches with cross-attention cut computation by 50%",
    "C8": "CrossViT: 35M params, 1.9x train, 2.8x inference, 82.1% top-1",
    "C9": "NaViT token dropout of 10-30% loses <1% accuracy and trains 25% faster",
    "C10": "packing mixed-resolution images into one batch raises training throughput by 40%",
    "C11": "DistillableViT + DistillWrapper (T=3, alpha=0.5) with a ResNet-50 teacher gives +8% accuracy; after "
           "3 rounds the student reaches 92% of the teacher at 3x speed",
    "C12": "dynamic INT8 quantisation of Linear layers: 75% less memory, 2-3x faster inference",
    "C13": "TorchScript / ONNX export removes Python interpreter overhead",
    "C14": "DataParallel across GPUs gives linear speed-up",
    "C15": '"training time -40%, inference 3x faster" overall',
}

VERDICTS = ("holds only when", "holds", "does not hold", "inconclusive on this machine", "not testable here")


def _one(m: Measured, threshold: float, at_least: bool) -> str:
    if at_least:
        return "holds" if m.low >= threshold else "does not hold" if m.high < threshold else "inconclusive"
    return "holds" if m.high <= threshold else "does not hold" if m.low > threshold else "inconclusive"


def verdict(measured: Measured | Mapping[str, Measured], threshold: float, *, at_least: bool = True,
            because: str = "") -> str:
    """The verdict on a claim that a measured value is at least ``threshold`` (or, with
    ``at_least=False``, at most ``threshold``).

    ``measured`` is one :class:`Measured`, or a mapping from a condition (``"rate 0.3"``,
    ``"batch 64"``) to the value measured under it. The claim "holds" when the whole spread clears
    the threshold under every condition, "does not hold" when it misses it under every condition,
    "holds only when <conditions>" when it clears it under some and misses it under the others,
    "does not hold for <conditions> (inconclusive for <the others>)" when it misses it under some
    and the others' spreads straddle it, and is "inconclusive on this machine" when every spread
    straddles it. ``because``, if given, is appended after a colon.
    """
    items = {"": measured} if isinstance(measured, Measured) else dict(measured)
    if not items:
        raise ValueError("verdict needs at least one measurement; received none")
    outcome = {cond: _one(m, threshold, at_least) for cond, m in items.items()}
    kinds = set(outcome.values())
    if kinds == {"holds"}:
        text = "holds"
    elif kinds == {"does not hold"}:
        text = "does not hold"
    elif "holds" in kinds and len(items) > 1:
        text = "holds only when " + ", ".join(c for c, o in outcome.items() if o == "holds")
        unsure = [c for c, o in outcome.items() if o == "inconclusive"]
        if unsure:
            text += f" (inconclusive for {', '.join(unsure)})"
    elif "does not hold" in kinds and len(items) > 1:
        missed = [c for c, o in outcome.items() if o == "does not hold"]
        unsure = [c for c, o in outcome.items() if o == "inconclusive"]
        text = f"does not hold for {', '.join(missed)} (inconclusive for {', '.join(unsure)})"
    else:
        text = "inconclusive on this machine"
    return f"{text}: {because}" if because else text


def all_of(parts: Mapping[str, str]) -> str:
    """The verdict on a claim that bundles several (a speed-up AND an accuracy kept), from the
    verdicts on its parts (each from :func:`verdict`, or ``"not testable here: why"``): "holds"
    when every part holds, "does not hold" when any part does not, "holds only when judged on
    <the parts tested>" when every part that could be tested holds and the others are "not
    testable here", else "inconclusive on this machine". Each part's verdict follows
    on a line of its own: ``"<name>: <its verdict> (<its reason>)"``."""
    if not parts:
        raise ValueError("all_of needs at least one part; received none")
    heads = {name: next(v for v in VERDICTS if text.startswith(v)) if any(text.startswith(v) for v in VERDICTS)
             else None for name, text in parts.items()}
    bad = [name for name, h in heads.items() if h is None]
    if bad:
        raise ValueError(f"each part must be a verdict starting with one of {VERDICTS}; received {bad}")
    tested = [name for name, h in heads.items() if h != "not testable here"]
    if not tested:
        text = "not testable here"
    elif any(heads[name] == "does not hold" for name in tested):
        text = "does not hold"
    elif all(heads[name] == "holds" for name in tested):
        text = "holds" if len(tested) == len(heads) else "holds only when judged on " + ", ".join(tested)
    else:
        text = "inconclusive on this machine"
    lines = []
    for name, part in parts.items():
        head = heads[name]
        rest = part[len(head):].lstrip(":").strip()
        if head == "inconclusive on this machine":  # said once, in the overall verdict
            head = "inconclusive"
        if head == "holds only when" or head.startswith("does not hold") and rest.startswith("for "):
            head, rest = f"{head} {rest}", ""  # the conditions belong to the verdict itself
        if _bracketed(rest):
            rest = rest[1:-1]  # already in brackets
        lines.append(f"{name}: {head}" + (f" ({rest})" if rest else ""))
    return text + "\n" + "\n".join(f"- {line}" for line in lines)


def _bracketed(text: str) -> bool:
    """Whether ``text`` is one bracketed group: ``"(a (b) c)"`` is, ``"(a) and (b)"`` is not."""
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return i == len(text) - 1 and i > 0
    return False


def seed_difference(results, other: str, base: str) -> Measured:
    """Accuracy of condition ``other`` minus ``base`` in percentage points, paired by seed, with
    its uncertainty (:meth:`Measured.difference`), from a table with columns ``condition``,
    ``seed`` and ``accuracy`` (0-1) whose ``attrs["test_size"]`` is the test-set size."""
    by = results.set_index(["condition", "seed"])["accuracy"]
    seeds = sorted(set(results["seed"]))
    for name in (base, other):
        if name not in set(results["condition"]):
            raise ValueError(f"no condition {name!r} in the results; they have {sorted(set(results['condition']))}")
    return Measured.difference([by[(base, s)] for s in seeds], [by[(other, s)] for s in seeds],
                               results.attrs["test_size"])


def epoch_speedup(results, other: str, base: str) -> Measured:
    """How much faster condition ``other`` trained than ``base``, from the training time of every
    epoch of every seed (the ``train_s`` of each history in ``results.attrs["histories"]``, keyed
    ``(condition, seed)``, as :func:`vitlib.train.train_conditions` returns them): the ratio of
    the medians, with its interquartile spread (:meth:`Measured.ratio`)."""
    histories = results.attrs["histories"]
    epochs = {name: [float(t) for (c, _), h in histories.items() if c == name for t in h["train_s"]]
              for name in (base, other)}
    for name, times in epochs.items():
        if not times:
            raise ValueError(f"no condition {name!r} in the results; they have "
                             f"{sorted({c for c, _ in histories})}")
    return Measured.ratio(epochs[base], epochs[other])


def verdict_table(rows: list[dict], *, chapter: str | None = None, setup=None):
    """A table of claims: each row gives ``id``, ``measured`` (text with the numbers measured in
    this run) and ``verdict`` (from :func:`verdict`, or one of :data:`VERDICTS` followed by the
    reason). With ``chapter`` (the notebook's stem) and ``setup`` (the chapter's
    :func:`vitlib.book.setup`), the rows are also recorded for the synthesis chapter
    (:func:`vitlib.book.results.record`)."""
    import pandas as pd

    out = []
    for row in rows:
        if row["id"] not in CLAIMS:
            raise ValueError(f"unknown claim id {row['id']!r}; expected one of {list(CLAIMS)}")
        if not any(row["verdict"].startswith(v) for v in VERDICTS):
            raise ValueError(f"verdict must start with one of {VERDICTS}; received {row['verdict']!r}")
        out.append({"claim": f"{row['id']}: {CLAIMS[row['id']]}", "measured here": row["measured"],
                    "verdict": row["verdict"]})
    if chapter is not None:
        from .results import record

        if setup is None:
            raise ValueError("verdict_table(chapter=...) records the run: pass setup=book (vitlib.book.setup())")
        record(chapter, mode=setup.mode, device=str(setup.device), claims=rows)
    table = pd.DataFrame(out)
    return table.style.hide(axis="index").set_properties(**{"text-align": "left", "white-space": "pre-wrap"})
