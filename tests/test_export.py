"""vitlib.export: every deployment path against eager, the support matrix, the command line and the
export suite, on tiny models."""
import json

import pytest
import torch
from torch import nn

from vitlib import bench
from vitlib import export as vexport
from vitlib.book.claims import VERDICTS
from vitlib.export import cli
from vitlib.models import SimpleViT
from vitlib.train import QUICK_RECIPE, load_model, save_checkpoint, train_recipe

TIMING = dict(rounds=1, min_run_time=0.01, num_threads=1)
TINY = ["--rounds", "1", "--min-run-time", "0.01", "--threads", "1"]
SAVED = ("int8", "export", "onnx", "torchscript")
# the paths checked one by one here; ONNX is checked in the matrix and by the command line's round
# trip, which compares the written file with eager on other images (one ONNX export fewer)
DIRECT = ("int8", "export", "torchscript")
# the largest logit difference from eager each path may show: INT8 is an approximation
EXACT = {"export": 1e-5, "onnx": 1e-4, "torchscript": 1e-5}


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_vit(**kw) -> SimpleViT:
    torch.manual_seed(0)
    cfg = dict(image_size=16, patch_size=4, num_classes=10, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64,
               channels=1)
    return SimpleViT(**{**cfg, **kw}).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_vit()


@pytest.fixture(scope="module")
def results(model):
    torch.manual_seed(1)
    return {path: vexport.export(model, path, model.example_input(2), **TIMING) for path in DIRECT}


@pytest.fixture(scope="module")
def book():
    return vexport.book_models("quick")


def check_int8(out, ref):
    """INT8 logits follow eager's within a few percent of their range, and pick the same class
    wherever eager's top two classes are not within that error of each other."""
    err = float((out - ref).abs().max())
    assert err <= 0.05 * float(ref.abs().max()), err
    top2 = ref.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * err
    assert torch.equal(out.argmax(-1)[clear], ref.argmax(-1)[clear])


@pytest.mark.parametrize("path", DIRECT)
def test_each_path_matches_eager_on_a_batch_it_was_not_built_with(model, results, path):
    result = results[path]
    x = model.example_input(3)
    with torch.inference_mode():
        out, ref = result(x), model(x)
    if path == "int8":
        check_int8(out, ref)
        assert result.max_abs_diff > 0  # it is an approximation, and says so
    else:
        assert float((out - ref).abs().max()) <= EXACT[path]
        assert result.max_abs_diff <= EXACT[path]
    assert result.top1_agreement == 1.0 or path == "int8"
    assert result.agreement_images == 2 + 3  # the example batch and one of another size
    assert result.size_mb > 0 and result.eager_mb > 0 and result.build_s > 0
    assert len(result.times["eager"]) >= bench.MIN_CALLS and len(result.times[path]) >= bench.MIN_CALLS
    assert result.speedup.n >= bench.MIN_CALLS and result.speedup.low <= result.speedup.value
    assert result.accuracy is None and result.accuracy_drop_pt is None  # no data set, no figure
    row = result.row()
    assert row["works"] and row["path"] == path and row["model"] == "SimpleViT"
    assert path in str(result) and "speed-up" in str(result)


def test_int8_file_rebuilds_the_same_quantised_model(model, results, tmp_path):
    result = results["int8"]
    file = vexport.save_artefact("int8", result.artefact, tmp_path / "m.safetensors")
    loaded = vexport.load(file)
    x = model.example_input(4)
    with torch.inference_mode():
        assert torch.equal(loaded(x), result(x))
    assert result.size_mb < result.eager_mb  # INT8 weights are smaller on disk
    assert any("deprecated" in note for note in result.notes)  # torch.ao's warning, kept as a note


def test_int8_reaches_levit_convolutions_only_after_folding(book):
    levit = book["LeViT"]()
    torch.manual_seed(0)
    for m in levit.modules():  # batch norms with statistics of their own, so that folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    levit.eval()
    x = levit.example_input(2)
    folded = vexport.to_int8(levit, x, **TIMING)
    plain = vexport.to_int8(levit, x, convs=False, **TIMING)
    assert folded.details["int8_flop_share"] > 0.5  # most of LeViT's FLOPs run in INT8
    assert plain.details["int8_flop_share"] < 0.05 and plain.details["int8_layers"] == 1  # the head alone
    assert any(isinstance(m, vexport.int8.Pointwise) for m in folded.artefact.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.artefact.modules())
    x = levit.example_input(3)
    with torch.inference_mode():
        check_int8(folded(x), levit(x))


def test_pointwise_is_the_convolution_it_replaces():
    torch.manual_seed(0)
    for stride in (1, 2):
        conv = nn.Conv2d(6, 5, 1, stride=stride)
        x = torch.randn(2, 6, 7, 5)
        assert torch.allclose(vexport.int8.Pointwise(conv)(x), conv(x), atol=1e-6)
    with pytest.raises(ValueError, match="1x1 convolution"):
        vexport.int8.Pointwise(nn.Conv2d(6, 5, 3))


@pytest.mark.slow
def test_compile_reports_compile_time_apart():
    model = tiny_vit(dim=16, depth=1, heads=1, mlp_dim=16)
    result = vexport.to_compile(model, model.example_input(2), **TIMING)
    assert result.details["compile_s"] == result.build_s > 0
    assert result.size_mb is None and result.max_abs_diff <= 1e-4  # nothing saved; same logits
    assert result.ms < result.build_s * 1e3  # a timed call costs far less than compiling
    assert "nothing saved" in str(result)


@pytest.mark.slow
def test_support_matrix_of_the_book_models(book):
    fixed = [name for name in book if name != "NaViT"]
    assert set(fixed) == {"ViT", "SimpleViT", "LeViT", "CrossViT", "DistillableViT", "ResNet"}
    paths = ("int8", "export", "torchscript")
    matrix = vexport.support_matrix(book, paths, **TIMING)
    assert len(matrix) == len(book) * len(paths)
    works = matrix.set_index(["model", "path"])["works"]
    for name in fixed:
        for path in paths:
            assert works[(name, path)], (name, path)
    ok = matrix[matrix["works"]]
    assert (ok["size_mb"] > 0).all() and (ok["speedup"] > 0).all() and (ok["calls"] >= bench.MIN_CALLS).all()
    assert (ok[ok["path"] != "int8"]["max_abs_diff"] <= 1e-5).all()
    navit = matrix[matrix["model"] == "NaViT"].set_index("path")
    assert navit.loc["int8", "works"]  # quantising modules does not care what the input is
    for path in ("export", "torchscript"):  # both ran only on the list of images they were built with
        assert not navit.loc[path, "works"]
        assert "fails on a batch of 3 (built with 2)" in navit.loc[path, "reason"]
    table = vexport.matrix_table(matrix)
    assert list(table.index) == list(book) and list(table.columns) == list(paths)
    assert table.loc["ViT", "export"].startswith("works: ")
    assert table.loc["NaViT", "export"].startswith("fails: ")


@pytest.mark.slow
def test_onnx_in_the_matrix(model):
    matrix = vexport.support_matrix({"SimpleViT": model}, ("export", "onnx"), **TIMING)
    row = matrix.set_index("path").loc["onnx"]
    assert row["works"] and row["max_abs_diff"] <= EXACT["onnx"] and row["top1_agreement"] == 1.0
    assert row["agreement_images"] == 2 + 3 and row["opset"] >= 18
    assert row["size_mb"] > 0 and row["speedup"] > 0 and row["calls"] >= bench.MIN_CALLS
    assert row["from_program"]  # converted from the export column's program, its batch still dynamic


def test_errors_name_what_was_expected(model, book):
    with pytest.raises(ValueError, match=r"path must be one of \['int8', .*'compile'\]; received 'tflite'"):
        vexport.export(model, "tflite")
    with pytest.raises(ValueError, match="paths must be some of"):
        vexport.support_matrix({"m": model}, ("tflite",))
    with pytest.raises(TypeError, match=r"to_export takes the keywords \[.*\]; received \['colour'\]"):
        vexport.to_export(model, colour="red")
    batch_of_one = vexport.to_export(model, model.example_input(1), **TIMING)  # the batch stays dynamic
    assert batch_of_one.batch == 1 and batch_of_one.agreement_images == 1 + 2
    with pytest.raises(TypeError, match="program must be a torch.export.ExportedProgram .*; received SimpleViT"):
        vexport.to_onnx(model, program=model)
    navit = book["NaViT"]()
    with pytest.raises(vexport.PathError, match="NaViT cannot take the torchscript path: .*batch of 2"):
        vexport.to_torchscript(navit, navit.example_input(1), **TIMING)
    with pytest.raises(ValueError, match=r"onnx artefacts are written to \.onnx files; received 'm\.pt'"):
        vexport.artefacts.check_suffix("onnx", "m.pt")
    assert vexport.reason(RuntimeError("wrapper")) == "RuntimeError: wrapper"
    try:
        try:
            raise TypeError("\x1b[96mf() got an unexpected keyword argument 'output_size'\x1b[0m")
        except TypeError as inner:
            raise RuntimeError("Failed to convert") from inner
    except RuntimeError as err:
        assert vexport.reason(err) == "TypeError: f() got an unexpected keyword argument 'output_size'"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    file = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    overrides = dict(dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32)
    model, history, data = train_recipe(QUICK_RECIPE, model_overrides=overrides, epochs=1, checkpoint=file,
                                        progress=False)
    return file, data


@pytest.mark.slow
@pytest.mark.parametrize("path", SAVED)
def test_command_line_round_trip(checkpoint, path, tmp_path, capsys, restore_threads):
    file, data = checkpoint
    out = tmp_path / f"model{vexport.SUFFIXES[path]}"
    assert cli.main([str(file), "--to", path, str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    for step in ("[1/4] loading", "[2/4] building", "[3/4] writing", "[4/4] loading"):
        assert step in printed
    assert out.is_file() and "speed-up" in printed
    eager, runner = load_model(file), vexport.load(out)
    x = data.test.images[:32]
    with torch.inference_mode():
        out_logits, ref = runner(x), eager(x)
    if path == "int8":
        check_int8(out_logits, ref)
    else:
        assert float((out_logits - ref).abs().max()) <= EXACT[path]


def test_command_line_errors(checkpoint, book, tmp_path, capsys, restore_threads):
    file, _ = checkpoint
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(file), "--to", "tflite", str(tmp_path / "m.tflite")])
    assert exit_.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    assert cli.main([str(file), "--to", "onnx", str(tmp_path / "m.pt")]) == 2
    assert "error: onnx artefacts are written to .onnx files" in capsys.readouterr().err
    not_a_checkpoint = tmp_path / "junk.safetensors"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    assert cli.main([str(not_a_checkpoint), "--to", "int8", str(tmp_path / "m.safetensors")]) == 2
    assert "is not a readable vitlib safetensors checkpoint" in capsys.readouterr().err
    navit = tmp_path / "navit.safetensors"
    save_checkpoint(navit, book["NaViT"]())
    assert cli.main([str(navit), "--to", "torchscript", str(tmp_path / "navit.pt"), *TINY]) == 2
    assert "error: NaViT cannot take the torchscript path" in capsys.readouterr().err


@pytest.mark.slow
def test_export_suite_reports_its_figures(tmp_path, capsys, restore_threads):
    out = tmp_path / "export.json"
    assert bench.main(["export", "--tiny", "--json", str(out), *TINY]) == 0
    data = json.loads(out.read_text())
    assert data["suite"] == "export" and data["tiny"] is True
    for key in ("int8_speedup_b16", "int8_accuracy_drop_pt", "ort_speedup_b1", "ort_max_abs_diff"):
        figure = data[key]
        assert figure["low"] <= figure["value"] <= figure["high"], key
        goal = data["goals"][key]
        assert goal["verdict"].startswith(VERDICTS) and goal["goal"].startswith(("at least", "at most"))
    assert data["ort_max_abs_diff"]["value"] <= 1e-4
    assert data["int8_weights_mb_int8"] < data["int8_weights_mb_fp32"]
    for key in ("int8_peak_mb_fp32", "int8_peak_mb_int8", "peak_mb_without_model"):
        assert data[key] > 0
    for key in ("fp32", "int8"):  # the model's share: the peak minus the process before loading it
        assert 0 < data[f"model_mb_{key}"] < data[f"int8_peak_mb_{key}"]
    assert data["peak_mb_without_model"] == pytest.approx(data["int8_peak_mb_fp32"] - data["model_mb_fp32"])
    assert data["accuracy_model"]["test_images"] == 360 and 0 <= data["int8_accuracy"] <= 1
    assert "goals" in capsys.readouterr().out


@pytest.mark.slow
def test_serving_sweep_and_its_chart(model, results):
    from vitlib.book.studies.deployment import serving_sweep
    from vitlib.book.widgets import plot_int8_grid, plot_serving, serving_chart

    onnx = vexport.to_onnx(model, model.example_input(1), **TIMING)
    sweep = serving_sweep(model, results["int8"], onnx, [1, 4], threads=(1,), rounds=1, min_run_time=0.01)
    assert list(sweep["path"]) == ["eager", "int8", "onnx"] * 2 and list(sweep["batch"]) == [1, 1, 1, 4, 4, 4]
    assert (sweep["calls"] >= bench.MIN_CALLS).all()
    assert (sweep["images_per_s"] - sweep["batch"] / (sweep["median_ms"] / 1e3)).abs().max() < 1e-6
    assert sweep.iloc[0]["speedup"].value == pytest.approx(1.0)  # eager over itself
    chart = serving_chart(sweep)
    assert chart.options == ["1"] and chart.values["1"] == [1, 4]
    assert chart.figure.layout.title.text.startswith("Serving at batch 1 on 1 thread:")
    with pytest.raises(ValueError, match="to_int8 and to_onnx"):
        serving_sweep(model, onnx, results["int8"], [1])
    with pytest.raises(ValueError, match="at least two batch sizes"):
        serving_chart(sweep[sweep["batch"] == 1])
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    plot_serving(axes, sweep)
    assert len(axes[0].lines) == 3
    fig, ax = plt.subplots()
    plot_int8_grid(ax, model.transformer.blocks[0].ff.fc1.weight)
    assert "INT8 step" in ax.get_title()
    plt.close("all")


def test_paired_drop_counts_the_images_right_in_one_and_wrong_in_the_other(results):
    from dataclasses import replace

    from vitlib.book.studies.deployment import paired_drop

    some = replace(results["int8"], accuracy=0.90, eager_accuracy=0.91, agreement_images=400, discordant=16)
    m = paired_drop(some)
    assert m.value == pytest.approx(1.0) and m.high - m.value == pytest.approx(2 * 4 / 400 * 100)
    assert "16 of 400" in m.how
    none = replace(some, accuracy=0.91, discordant=0)
    assert paired_drop(none).high == pytest.approx(3 / 400 * 100)  # the rule of three, never ±0
    with pytest.raises(ValueError, match="no accuracy"):
        paired_drop(results["int8"])  # measured without a data set
