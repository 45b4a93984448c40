"""Chapter 9's helpers that need no second process: launch commands, memory per replica, what
DataParallel does here, the diagram and the explorer, and source listings."""
import sys

import matplotlib
import pytest
import torch

from vitlib.book import show_source
from vitlib.models import presets
from vitlib.book.studies import scaling
from vitlib.train import fit

matplotlib.use("Agg")


def test_torchrun_command_runs_this_interpreter_with_a_free_rendezvous():
    cmd = scaling.torchrun_command(2, ["--epochs", 1])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3:] == ["--standalone", "--nproc_per_node=2", "-m", "vitlib.train", "--epochs", "1"]
    with pytest.raises(ValueError, match="processes must be positive; received 0"):
        scaling.torchrun_command(0, [])


def test_replica_memory_is_sixteen_bytes_a_parameter_shared_out_by_fsdp():
    table = scaling.replica_memory(["ViT-B/16", "LeViT-128S"], gpus=4)
    with torch.device("meta"):
        n = sum(p.numel() for p in presets.create("ViT-B/16").parameters())
    row = table.loc["ViT-B/16"]
    assert row["parameters (M)"] == pytest.approx(n / 1e6) and 85 < n / 1e6 < 88  # the paper: 86M
    assert row["DDP: GB per GPU"] == pytest.approx(16 * n / 1e9)
    assert row["FSDP over 4 GPUs: GB per GPU"] == pytest.approx(4 * n / 1e9)
    assert scaling.gradient_bytes("ViT-B/16") == 4 * n


def test_data_parallel_without_gpus_only_calls_the_model(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, shape = scaling.recipe_model("quick")
    seen = scaling.data_parallel_here(model.eval(), torch.randn(2, *shape))
    assert seen == {"cuda_devices": 0, "device_ids": [], "output_is_the_model_s": True}


def test_the_diagram_and_the_explorer_draw():
    import matplotlib.pyplot as plt

    from vitlib.book import diagrams, widgets

    fig = diagrams.data_parallel(processes=3)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "process 2\nreplica of the model\nforward, loss, backward" in texts
    assert any("(g0 + g1 + g2) / 3" in t for t in texts)
    plt.close(fig)
    fig, ax = plt.subplots()
    result = {"processes": 2, "backend": "gloo", "sweep": {"bytes": [4096, 16_777_216],
                                                           "seconds": [[1e-3, 2e-3, 3e-3], [0.02, 0.04, 0.08]]}}
    widgets.plot_allreduce_sweep(ax, result, {"ViT-B/16": scaling.gradient_bytes("ViT-B/16")})
    plt.close(fig)
    box = widgets.allreduce_explorer(result, ["ViT-Ti/16", "ViT-B/16"])
    assert box.children[0].children[0].options == ("ViT-Ti/16", "ViT-B/16")


def test_show_source_lists_the_lines_between_start_and_stop_without_the_omitted():
    listing = show_source(fit, "def train_step(", ".backward()",
                          omit=("raise TypeError", "if not (isinstance")).data
    assert listing.startswith("`vitlib/train/loop.py`, lines ")
    code = listing.split("```python\n")[1]
    assert code.startswith("def train_step(x, y, global_n):\n")
    assert code.rstrip("`\n").endswith(".backward()") and "raise TypeError" not in code
    assert code.count("# ...") == 1  # a run of omitted lines is one gap
    first, last = map(int, listing.split("lines ")[1].split(":")[0].split("-"))
    assert last - first + 1 == len(code.rstrip("`\n").splitlines()) + 1  # two lines became one gap
    with pytest.raises(ValueError, match="contains start='no such line'"):
        show_source(fit, "no such line")


def test_show_source_folds_wide_lines_into_valid_python_and_unwraps_decorators():
    import ast

    from vitlib.book import LISTING_WIDTH, fold_line, show_source
    from vitlib.fuse import fold_batchnorm

    signature = "def f(alpha: int, beta: tuple[int, int, int], gamma: int, delta: float, epsilon: bool) -> int:"
    folded = fold_line(signature)
    assert len(folded) == 2 and all(len(line) <= LISTING_WIDTH for line in folded)
    ast.parse("\n".join(folded) + "\n    return 1\n")  # still valid Python
    comment = "    # " + "word " * 30
    assert all(len(line) <= LISTING_WIDTH and line.startswith("    # ") for line in fold_line(comment))
    text = 'x = g("a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u, v, w, x, y, z, aa, bb")'
    assert fold_line(text) == [text]  # commas inside a string are never split
    listing = show_source(fold_batchnorm).data
    assert listing.startswith("`vitlib/fuse.py`") and "def fold_batchnorm" in listing
