"""Chapter 10's reading of its measurements: which rows no other beats (:func:`pareto_front`), the
verdict on claim C15 (:func:`overall`) and what to choose for which goal (:func:`decision_guide`),
every figure taken from the table :func:`vitlib.book.studies.synthesis.latency_table` measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..claims import Measured, all_of, verdict

__all__ = ["Overall", "pareto_front", "overall", "decision_guide"]


def pareto_front(df, x: str, y: str):
    """A boolean Series over ``df``'s rows: True where no other row has an ``x`` at most as large
    and a ``y`` at least as large, one of them strictly (``x`` is minimised, ``y`` maximised).
    Rows missing either value are never on the front."""
    import pandas as pd

    for column in (x, y):
        if column not in df.columns:
            raise ValueError(f"pareto_front: no column {column!r}; the table has {list(df.columns)}")
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=float)
    ok = ~(pd.isna(xs) | pd.isna(ys))
    front = [bool(ok[i]) and not any(ok[j] and xs[j] <= xs[i] and ys[j] >= ys[i]
                                     and (xs[j] < xs[i] or ys[j] > ys[i]) for j in range(len(df)))
             for i in range(len(df))]
    return pd.Series(front, index=df.index, name=f"front of {y} against {x}")


def _rows(table) -> list[dict]:
    need = {"model", "optimisation", "works", "accuracy"}
    if not need <= set(table.columns):
        raise ValueError(f"expected a latency_table with columns {sorted(need)}; received "
                         f"{list(table.columns)}")
    return [r for r in table.to_dict("records") if r["works"] and r["accuracy"] is not None
            and not (isinstance(r["accuracy"], float) and math.isnan(r["accuracy"]))]


@dataclass
class Overall:
    """Claim C15 judged on ``model`` with ``optimisation``, the best of the ``candidates`` (every
    combination that keeps the baseline's accuracy, each with its verdict)."""

    model: str
    optimisation: str
    baseline: str
    training_time: Measured
    inference_speedup: Measured
    accuracy_difference: Measured
    verdict: str
    candidates: Any = field(repr=False)

    def measured(self) -> str:
        return (f"{_name(vars(self))} against {self.baseline} in eager (the best of "
                f"{len(self.candidates)} combinations not clearly less accurate): training time as a "
                f"multiple of {self.baseline}'s {self.training_time}; inference speed-up "
                f"{self.inference_speedup}; accuracy {self.accuracy_difference}")

    def row(self) -> dict:
        """The claims-table row: ``id``, ``measured``, ``verdict``."""
        return {"id": "C15", "measured": self.measured(), "verdict": self.verdict}


_RANK = {"holds": 0, "inconclusive on this machine": 1, "does not hold": 2}


def overall(table, baseline: str = "ViT", *, saving_pct: float = 40.0, speedup: float = 3.0) -> Overall:
    """Claim C15, '"training time -40%, inference 3x faster" overall', on a :func:`latency_table`.

    Candidates: every combination of a model and a path that works and whose accuracy is not
    clearly below the baseline's eager accuracy (the upper bound of their difference,
    :meth:`Measured.difference` on the test set, reaches 0). Each is judged on two parts, with
    :func:`~vitlib.book.claims.verdict` and :func:`~vitlib.book.claims.all_of`: "training time -40%", its
    model's training time over the baseline's, at most ``1 - saving_pct / 100`` (from
    the interleaved training steps, ``attrs["step_times"]``, else from the epochs one after another,
    ``attrs["epoch_times"]``); and "inference 3x faster", its speed-up over the baseline in eager
    (``vs_baseline``), at least ``speedup``. The claim is judged on the best candidate: one that
    holds, else one whose verdict is inconclusive, else the one that comes closest."""
    import pandas as pd

    rows = _rows(table)
    steps, test_size = table.attrs.get("step_times"), table.attrs.get("test_size")
    what = "interleaved training steps" if steps else "epochs"
    times = steps or table.attrs.get("epoch_times")
    if not times or not test_size:
        raise ValueError("overall needs a latency_table of a same_budget table: attrs 'step_times' or "
                         f"'epoch_times', and 'test_size'; received attrs {sorted(table.attrs)}")
    base = [r for r in rows if r["model"] == baseline and r["optimisation"] == "eager"]
    if not base:
        raise ValueError(f"no eager row of the baseline {baseline!r} with an accuracy; the table has "
                         f"{sorted({r['model'] for r in rows})}")
    judged = []
    for r in rows:
        diff = Measured.difference([float(base[0]["accuracy"])], [float(r["accuracy"])], int(test_size))
        if diff.high < 0 or r.get("vs_baseline") is None:
            continue
        # the model's training time as a multiple of the baseline's: below 1 when it trains faster
        ratio = Measured.ratio(times[r["model"]], times[baseline], what)
        parts = {f"training time -{saving_pct:g}%": verdict(
                     ratio, 1 - saving_pct / 100, at_least=False, because=f"{r['model']}'s {what} against "
                                                                           f"{baseline}'s"),
                 f"inference {speedup:g}x faster": verdict(
                     r["vs_baseline"], speedup, because=f"{_name(r)} against {baseline} in eager, batch "
                                                        f"{r.get('batch')}, cpu")}
        text = all_of(parts)
        closeness = min((1 - saving_pct / 100) / ratio.value, r["vs_baseline"].value / speedup)
        judged.append({"model": r["model"], "optimisation": r["optimisation"], "training_time": ratio,
                       "inference_speedup": r["vs_baseline"], "accuracy_difference": diff, "verdict": text,
                       "_key": (_RANK.get(text.split("\n")[0], 1), -closeness)})
    best = min(judged, key=lambda j: j["_key"])
    return Overall(**{k: v for k, v in best.items() if k != "_key"}, baseline=baseline,
                   candidates=pd.DataFrame([{k: v for k, v in j.items() if k != "_key"} for j in judged]))


def _name(r: Mapping) -> str:
    return r["model"] if r["optimisation"] == "eager" else f"{r['model']} with {r['optimisation']}"


def decision_guide(table):
    """What to choose for which goal, from a :func:`latency_table`: a DataFrame with ``goal``,
    ``choice`` and ``measured`` (every figure from the table): the most accurate, the fastest
    inference that is not clearly less accurate than the most accurate (test-set uncertainty),
    the fastest inference of all, the fastest to train (interleaved steps where measured), the
    smallest, the fewest FLOPs, the largest gain from a path, and the paths that fail."""
    import pandas as pd

    rows, attrs = _rows(table), table.attrs
    if not rows:
        raise ValueError("decision_guide needs at least one working row with an accuracy; received none")
    eager = [r for r in rows if r["optimisation"] == "eager"]
    steps = {n: Measured.of_values(t).value * 1e3 for n, t in (attrs.get("step_times") or {}).items()}
    best = max(rows, key=lambda r: r["accuracy"])
    guide = []

    def add(goal: str, candidates: list, key, text, bounds=None) -> None:
        """The candidate that minimises ``key``; with ``bounds(r) -> (low, high)``, the others
        whose range overlaps the winner's are named as not told apart from it."""
        if candidates:
            r = min(candidates, key=key)
            choice = _name(r)
            if bounds is not None:
                low, high = bounds(r)
                ties = [_name(o) for o in candidates if o is not r and bounds(o)[0] <= high and bounds(o)[1] >= low]
                if ties:
                    choice += f" (not told apart from {', '.join(ties)}: their ranges overlap)"
            guide.append((goal, choice, f"{text(r)}; {r['accuracy']:.1%} test accuracy"))

    def latency(r) -> tuple[float, float]:
        return r.get("ms_low", r["ms"]), r.get("ms_high", r["ms"])

    step_range = {n: Measured.of_values(t) for n, t in (attrs.get("step_times") or {}).items()}

    def train_bounds(r) -> tuple[float, float]:
        m = step_range.get(r["model"])
        return (m.low, m.high) if m is not None else (r["train_s"], r["train_s"])

    def speed(r) -> str:
        vs = r.get("vs_baseline")
        versus = f", {vs.value:.2f}x {attrs['baseline']}'s eager" if attrs.get("baseline") and vs else ""
        return f"{r['ms']:.2f} ms per batch of {r['batch']}{versus}"

    def gap(r) -> Measured:
        return Measured.difference([best["accuracy"]], [r["accuracy"]], int(attrs["test_size"]))

    add("most accurate", [best], lambda r: 0, speed)
    if attrs.get("test_size"):
        add("fastest inference, not clearly less accurate than the most accurate",
            [r for r in rows if gap(r).high >= 0], lambda r: r["ms"],
            lambda r: f"{speed(r)} ({gap(r)} against {_name(best)})", latency)
    add("fastest inference of all", rows, lambda r: r["ms"], speed, latency)
    if eager and "train_s" in table.columns:
        add("fastest to train", eager, lambda r: steps.get(r["model"], r["train_s"]),
            lambda r: (f"{steps[r['model']]:.1f} ms per training step (interleaved), " if steps else "")
            + f"{r['train_s']:.1f} s for {attrs.get('epochs')} epoch(s)", train_bounds if steps else None)
        add("fewest parameters", eager, lambda r: r["params"], lambda r: f"{int(r['params']):,} parameters")
        add("fewest FLOPs", eager, lambda r: r["flops"], lambda r: f"{r['flops'] / 1e6:.2f} MFLOPs per image")
    own = {r["model"]: r["accuracy"] for r in eager}
    add("largest gain from a deployment path", [r for r in rows if r["optimisation"] != "eager"],
        lambda r: -r["speedup"].value, lambda r: f"{r['speedup']} over its eager" + (
            f", accuracy {(r['accuracy'] - own[r['model']]) * 100:+.1f} pt" if r["model"] in own else ""))
    failed = table[~table["works"].astype(bool)].to_dict("records")
    if failed:
        guide.append(("paths that fail", ", ".join(map(_name, failed)),
                      "; ".join(f"{_name(r)}: {r['reason']}" for r in failed)))
    return pd.DataFrame(guide, columns=["goal", "choice", "measured"])
