"""The blog post's claims that the book tests, and the table that sets them beside measurements.

Each chapter calls :func:`verdict_table` with what it measured; the claim's wording lives here,
in one place.
"""
from __future__ import annotations

__all__ = ["CLAIMS", "VERDICTS", "verdict_table"]

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

VERDICTS = ("holds", "does not hold", "holds only when", "not testable here")


def verdict_table(rows: list[dict]):
    """A table of claims: each row gives ``id``, ``measured`` (text with the numbers measured in
    this run) and ``verdict`` (one of :data:`VERDICTS`, optionally followed by the condition)."""
    import pandas as pd

    out = []
    for row in rows:
        if row["id"] not in CLAIMS:
            raise ValueError(f"unknown claim id {row['id']!r}; expected one of {list(CLAIMS)}")
        if not any(row["verdict"].startswith(v) for v in VERDICTS):
            raise ValueError(f"verdict must start with one of {VERDICTS}; received {row['verdict']!r}")
        out.append({"claim": f"{row['id']}: {CLAIMS[row['id']]}", "measured here": row["measured"],
                    "verdict": row["verdict"]})
    table = pd.DataFrame(out)
    return table.style.hide(axis="index").set_properties(**{"text-align": "left", "white-space": "pre-wrap"})
