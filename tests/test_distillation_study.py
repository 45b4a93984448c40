"""Chapter 6's experiments (vitlib.book.studies.distillation) on tiny workloads."""
import pytest
import torch

from vitlib.book.claims import Measured
from vitlib.data import DataSplit, _AugmentedTensors, digits, train_augment
from vitlib.distill import UNLABELLED
from vitlib.book.studies import distillation as study

pytestmark = pytest.mark.usefixtures("one_thread")

TEACHER = {"layers": (1, 1), "widths": (8, 16)}
STUDENT = {"patch_size": 4, "dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32}
FIT = {"epochs": 1, "batch_size": 256, "lr": 3e-3, "label_smoothing": 0.1}


@pytest.fixture(scope="module")
def data():
    return digits(image_size=8)


def test_hide_labels_keeps_a_stratified_share_and_every_image(data):
    every, few = study.hide_labels(data, 0.1)
    labels = every.train.labels
    kept = labels != UNLABELLED
    assert len(every.train) == len(data.train) and every.train.images is data.train.images
    assert kept.sum() == len(few.train) == int(0.1 * len(data.train))  # a share of the images, rounded down
    assert torch.equal(labels[kept], data.train.labels[kept]) and torch.equal(few.train.labels, labels[kept])
    assert torch.bincount(few.train.labels, minlength=10).min() >= 12  # every class, in proportion
    assert len(study.subset(data, 0.25).train) == int(0.25 * len(data.train))
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]; received 0"):
        study.subset(data, 0)


def test_compare_students_pairs_conditions_by_seed(data):
    teacher, history = study.train_teacher(data, TEACHER, FIT)
    assert not teacher.training and len(history) == 1
    results = study.compare_students(data, teacher, STUDENT, FIT, seeds=(0, 1))
    assert list(results["condition"]) == ["alone", "soft", "hard"] * 2
    assert results.attrs["test_size"] == len(data.test) and len(results.attrs["histories"]) == 6
    alone = results[results["condition"] == "alone"]
    assert alone["class head"].isna().all() and results.loc[results["condition"] != "alone", "class head"].notna().all()
    gain = study.accuracy_difference(results, "soft")
    by = results.set_index(["condition", "seed"])["accuracy"]
    expected = 100 * ((by["soft", 0] + by["soft", 1]) - (by["alone", 0] + by["alone", 1])) / 2
    assert gain.unit == "pt" and gain.value == pytest.approx(expected) and gain.low < gain.value < gain.high
    share = study.relative_accuracy(results, "soft", 0.9)
    assert share.value == pytest.approx(100 * results.loc[results["condition"] == "soft", "accuracy"].mean() / 0.9)
    assert "gain over alone" in study.summary(results).data.columns


def test_the_same_seed_gives_the_same_student_alone(data):
    teacher, _ = study.train_teacher(data, TEACHER, FIT)
    a = study.compare_students(data, teacher, STUDENT, FIT, conditions={"alone": study.CONDITIONS["alone"]},
                               seeds=(3,))
    b = study.compare_students(data, teacher, STUDENT, FIT, conditions={"alone": study.CONDITIONS["alone"]},
                               seeds=(3,))
    assert a["accuracy"].tolist() == b["accuracy"].tolist()


def test_grid_has_every_setting_and_alone_at_every_temperature(data):
    every, few = study.hide_labels(data, 0.2)
    teacher, _ = study.train_teacher(few, TEACHER, FIT, steps_of=len(data.train))
    grid = study.temperature_alpha_grid(every, teacher, STUDENT, FIT, temperatures=(1.0, 4.0), alphas=(0.5,))
    assert sorted(zip(grid["temperature"], grid["alpha"])) == [(1.0, 0.0), (1.0, 0.5), (4.0, 0.0), (4.0, 0.5)]
    alone = grid[grid["alpha"] == 0]
    assert alone["accuracy"].nunique() == 1  # one student alone, shown at every temperature


def test_augmented_in_memory_data_runs_the_teacher_per_batch():
    """Full mode's shape of data (CIFAR-10: uint8 images augmented per sample), tiny."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.arange(96) % 4
    mean, std = (0.5,) * 3, (0.25,) * 3
    split = DataSplit("fake", _AugmentedTensors(images, labels, mean, std, train_augment(8), 8),
                      _AugmentedTensors(images[:32], labels[:32], mean, std, None, 8), list("abcd"), (8, 8), 3)
    every, few = study.hide_labels(split, 0.5)
    assert (every.train.labels == UNLABELLED).sum() == 48 and len(few.train) == 48
    teacher, _ = study.train_teacher(few, TEACHER, {**FIT, "batch_size": 32})
    results = study.compare_students(every, teacher, STUDENT, {**FIT, "batch_size": 32}, seeds=(0,))
    assert len(results) == 3 and results["accuracy"].between(0, 1).all()


def test_against_says_where_each_range_lies():
    m = {"a": Measured(10, 9, 11, 3, "pt"), "b": Measured(2, -1, 5, 3, "pt"), "c": Measured(8, 6, 10, 3, "pt")}
    assert study.against(m, 8.0, " points") == ("a, the range lies above 8 points; b, the range lies below 8 points; "
                                               "c, the range lies on both sides of 8 points")


def test_speed_times_both_models_interleaved(data):
    teacher, _ = study.train_teacher(data, TEACHER, FIT)
    student = study._student(data, STUDENT, 0)
    result = study.speed(teacher, student, study.batch_of(data.test, 64), rounds=2, min_run_time=0.02)
    assert min(len(t) for t in result["times"].values()) >= 2
    assert result["speedup"].unit == "x" and result["speedup"].low <= result["speedup"].value <= result["speedup"].high
    assert list(result["table"].data.index) == ["teacher", "student"] and "thread" in result["where"]
    assert not teacher.training and student.training  # measuring left each model in its mode


def test_audit_shows_what_each_wrapper_does_to_its_teacher(data):
    table = study.audit_wrappers(data, TEACHER, STUDENT)
    assert table.loc["teacher in eval mode after wrapper.train()", "vitlib"] == "yes"
    assert table.loc["teacher's weights among wrapper.parameters()", "vitlib"] == 0
    assert table.loc["teacher's batch-norm statistics moved by one loss", "vit-pytorch"] == "yes"
    assert table.loc["teacher's weights among wrapper.parameters()", "vit-pytorch"] > 0


def test_grid_reuses_the_runs_it_was_given(data):
    teacher, _ = study.train_teacher(data, TEACHER, FIT)
    runs = study.compare_students(data, teacher, STUDENT, FIT, seeds=(0,))
    fake = runs.assign(accuracy=[0.123, 0.456, 0.789])  # marks: a reused run keeps its figure
    grid = study.temperature_alpha_grid(data, teacher, STUDENT, FIT, temperatures=(3.0,), alphas=(0.5, 0.9),
                                        reuse=fake)
    by = grid.set_index(["temperature", "alpha"])["accuracy"]
    assert by[(3.0, 0.0)] == 0.123 and by[(3.0, 0.5)] == 0.456  # alone and soft: reused
    assert by[(3.0, 0.9)] not in (0.123, 0.456, 0.789)  # trained


def test_temperature_alpha_chart_shows_each_temperatures_students_and_teacher():
    import json
    import re

    import pandas as pd

    from vitlib.book.widgets import temperature_alpha_chart

    rows = [{"temperature": t, "alpha": a, "accuracy": 0.5 + 0.1 * a + 0.01 * t, "agreement": 0.9}
            for t in (1.0, 3.0) for a in (0.0, 0.5, 0.9)]
    grid = pd.DataFrame(rows)
    grid.attrs["test_size"] = 360
    logits = torch.tensor([2.0, 0.0, 1.0])
    chart = temperature_alpha_chart(grid, logits, ["a", "b", "c"])
    assert chart.values == {None: [1.0, 3.0]}
    spec = json.loads(re.search(r'id="[^"]+-spec">(.*?)</script>', chart.to_html(), re.S)[1])
    step = spec["layout"]["sliders"][0]["steps"][1]  # T = 3
    assert step["args"][1]["title.text"].startswith("T = 3: one seed each, 360 test images")
    students, teacher = [t for t, shown in zip(spec["data"], step["args"][0]["visible"]) if shown]
    at_three = grid[grid["temperature"] == 3.0].sort_values("alpha")
    assert students["y"] == pytest.approx(list(100 * at_three["accuracy"]))
    assert teacher["y"] == pytest.approx(torch.softmax(logits / 3, -1).tolist())


def test_relative_accuracy_bounds_count_both_errors_and_the_shared_test_set():
    import math

    import pandas as pd

    results = pd.DataFrame({"condition": ["soft"] * 3, "seed": [0, 1, 2], "accuracy": [0.9] * 3})
    results.attrs["test_size"] = 100
    share = study.relative_accuracy(results, "soft", 0.95)
    value = 100 * 0.9 / 0.95
    half = 2 * value * math.sqrt(0.1 / (0.9 * 100) + 0.05 / (0.95 * 100))  # three seeds, one test set
    assert share.value == pytest.approx(value) and share.high - share.value == pytest.approx(half)
    assert "3 seeds" in share.how
