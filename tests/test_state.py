"""Library code leaves the caller's state as it found it: each submodule's train/eval mode, torch's
random state (seeded work draws from a private stream: the same seed gives the same numbers), and
the process's loggers."""
import ast
import logging
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from torch import nn

from vitlib import SimpleViT, ViT
from vitlib.data import TensorImageDataset, digits
from vitlib.models.state import module_modes, private_rng, restore_modes, seed_rng
from vitlib.train import evaluate, fit

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
VITLIB = ROOT / "vitlib"
CFG = dict(image_size=8, patch_size=4, num_classes=10, channels=1, dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32)


@pytest.fixture(scope="module")
def data():
    return digits(image_size=8)


def small_vit(**kw) -> ViT:
    with private_rng(0):
        return ViT(**{**CFG, **kw})


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def keeps_rng(fn):
    """``fn()``, checked to leave torch's global random state as it was."""
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    out = fn()
    assert torch.equal(torch.get_rng_state(), before), "the caller's random state changed"
    return out


# ---- each submodule's mode ---------------------------------------------------------------------


def frozen_backbone(model: nn.Module) -> nn.Module:
    """``model`` in training mode with its transformer (a frozen, evaluated backbone) in eval mode."""
    model.train()
    model.transformer.eval()
    return model


def assert_frozen_backbone(model: nn.Module) -> None:
    assert model.training and model.head.training
    assert not any(m.training for m in model.transformer.modules()), "a submodule left in eval mode was flipped"


def test_module_modes_are_restored_one_by_one():
    model = frozen_backbone(small_vit())
    modes = module_modes(model)
    model.eval()
    restore_modes(modes)
    assert_frozen_backbone(model)
    model.train()
    restore_modes(modes)
    assert_frozen_backbone(model)


def test_evaluate_restores_a_submodule_left_in_eval_mode(data):
    model = frozen_backbone(small_vit())
    evaluate(model, data.test, batch_size=512)
    assert_frozen_backbone(model)


def test_attention_maps_restore_a_submodule_left_in_eval_mode():
    model = frozen_backbone(small_vit())
    maps = model.attention_maps(model.example_input(1))
    assert len(maps) == 1
    assert_frozen_backbone(model)


def test_int8_preparation_restores_a_submodule_left_in_eval_mode():
    from vitlib.export.int8 import prepare_int8

    model = frozen_backbone(small_vit())
    prepare_int8(model)
    assert_frozen_backbone(model)


def test_eval_mode_shares_the_restore():
    from vitlib.bench import eval_mode

    model = frozen_backbone(small_vit())
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert_frozen_backbone(model)


# ---- torch's random state ----------------------------------------------------------------------


def test_no_library_code_seeds_torch_globally():
    """Only the book's ``seed_everything`` seeds the process; everything else draws from a private
    stream (vitlib.models.state) or a generator of its own."""
    allowed = {("book/__init__.py", "seed_everything"), ("models/state.py", "seed_rng")}
    found = []

    class Seeds(ast.NodeVisitor):
        def __init__(self, path):
            self.path, self.functions = path, ["<module>"]

        def visit_FunctionDef(self, node):
            self.functions.append(node.name)
            self.generic_visit(node)
            self.functions.pop()

        def visit_Call(self, node):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in ("manual_seed", "manual_seed_all", "seed") \
                    and ast.unparse(f.value) in ("torch", "torch.random", "torch.cuda"):
                where = (self.path, self.functions[-1])
                if where not in allowed:
                    found.append(f"{where[0]}:{node.lineno} ({where[1]})")
            self.generic_visit(node)

    for path in sorted(VITLIB.rglob("*.py")):
        Seeds(str(path.relative_to(VITLIB))).visit(ast.parse(path.read_text()))
    assert not found, f"torch's global generators seeded in: {found}"


def test_a_private_stream_repeats_and_keeps_the_callers_state():
    a = keeps_rng(lambda: _draw(5))
    b = keeps_rng(lambda: _draw(5))
    assert torch.equal(a, b) and not torch.equal(a, keeps_rng(lambda: _draw(6)))
    with private_rng():  # no seed: the caller's stream, given back
        x = torch.rand(3)
    assert torch.equal(torch.rand(3), x)


def _draw(seed):
    with private_rng(seed):
        return torch.randn(4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_private_stream_on_a_gpu_keeps_the_gpus_state():
    torch.cuda.manual_seed(99)
    before = torch.cuda.get_rng_state()
    draws = []
    for _ in range(2):
        with private_rng(7, "cuda"):
            draws.append(torch.randn(4, device="cuda"))
    assert torch.equal(*draws) and torch.equal(torch.cuda.get_rng_state(), before)
    with private_rng(device="cuda"):
        seed_rng(3, "cuda")
    assert torch.equal(torch.cuda.get_rng_state(), before)


def test_fit_draws_from_its_own_stream_and_repeats(data):
    train = TensorImageDataset(data.train.images[:256], data.train.labels[:256])
    runs = []
    for _ in range(2):
        model = small_vit(dropout=0.2, emb_dropout=0.2)  # dropout draws from torch's global generator
        history = keeps_rng(lambda: fit(model, train, epochs=2, batch_size=64, seed=5, progress=False))
        runs.append((weights(model), [r["train_loss"] for r in history]))
    assert same(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    other = small_vit(dropout=0.2, emb_dropout=0.2)
    fit(other, train, epochs=2, batch_size=64, seed=6, progress=False)
    assert not same(weights(other), runs[0][0])


def test_evaluate_leaves_the_random_state_also_through_a_dataloader(data):
    class Plain(torch.utils.data.Dataset):  # not in memory: batches come from a DataLoader
        def __len__(self):
            return 64

        def __getitem__(self, i):
            return data.test.images[i], data.test.labels[i]

    model = small_vit()
    keeps_rng(lambda: evaluate(model, Plain(), batch_size=32))


def test_train_recipe_builds_the_same_model_for_the_same_seed(data):
    from vitlib.train import QUICK_RECIPE, train_recipe

    small = dict(dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32)
    runs = [keeps_rng(lambda: train_recipe(QUICK_RECIPE, model_overrides=small, epochs=1, seed=2, progress=False))
            for _ in range(2)]
    assert same(weights(runs[0][0]), weights(runs[1][0]))


def test_the_studies_seed_privately_and_repeat(data):
    from vitlib.book.studies import distillation, levit, navit, scaling

    assert keeps_rng(lambda: levit.affine_deviation(True, image_size=32, seed=1)) == \
        keeps_rng(lambda: levit.affine_deviation(True, image_size=32, seed=1))
    assert keeps_rng(lambda: navit.qk_norm_sharpness(seed=3)) == keeps_rng(lambda: navit.qk_norm_sharpness(seed=3))
    models = [keeps_rng(lambda: scaling.recipe_model("quick")[0]) for _ in range(2)]
    assert same(weights(models[0]), weights(models[1]))
    student = {"patch_size": 4, "dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32}
    fit_kwargs = {"epochs": 1, "batch_size": 256, "lr": 3e-3}
    teachers = [keeps_rng(lambda: distillation.train_teacher(data, {"layers": (1, 1), "widths": (8, 16)},
                                                             fit_kwargs, seed=4)[0]) for _ in range(2)]
    assert same(weights(teachers[0]), weights(teachers[1]))
    audits = [keeps_rng(lambda: distillation.audit_wrappers(data, {"layers": (1, 1), "widths": (8, 16)}, student))
              for _ in range(2)]
    assert audits[0].equals(audits[1])


def test_timed_studies_and_suites_keep_the_random_state():
    from vitlib.book.studies import anatomy, attention, lightweight

    timing = dict(rounds=1, min_run_time=0.01, num_threads=1)
    keeps_rng(lambda: attention.kernel_sweep([4], dim=16, heads=2, dim_head=8, backends=("plain", "math"),
                                             **timing))
    keeps_rng(lambda: lightweight.compare_configs({**CFG, "channels": 1}, {**CFG, "channels": 1, "depth": 2},
                                                  batch=2, **timing))
    args = Namespace(device="cpu", batch=2, rounds=1, min_run_time=0.01, threads=1)
    keeps_rng(lambda: anatomy.anatomy_suite(args))


def test_the_support_matrix_builds_each_model_privately():
    from vitlib.export import support_matrix

    built = []

    def build():
        built.append(SimpleViT(**{**CFG, "channels": 1}))
        return built[-1]

    for _ in range(2):
        keeps_rng(lambda: support_matrix({"m": build}, ("torchscript",), rounds=1, min_run_time=0.01, num_threads=1))
    assert same(weights(built[0]), weights(built[1]))


def test_the_export_command_line_keeps_the_random_state(tmp_path, capsys):
    from vitlib.export import cli
    from vitlib.train import save_checkpoint

    file = tmp_path / "m.safetensors"
    save_checkpoint(file, SimpleViT(**{**CFG, "channels": 1}))
    keeps_rng(lambda: cli.main([str(file), "--to", "torchscript", str(tmp_path / "m.pt"), "--rounds", "1",
                                "--min-run-time", "0.01", "--threads", "1"]))


# ---- the process's loggers ---------------------------------------------------------------------


@pytest.mark.slow
def test_importing_the_timing_module_leaves_the_loggers_alone():
    code = ("import logging; log = logging.getLogger('torch.utils.cpp_extension'); log.setLevel(logging.INFO); "
            "import vitlib.bench.timing; print(log.level, len(log.filters))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert run.stdout.split() == [str(logging.INFO), "0"]
    assert "CUDA_HOME" not in run.stderr  # the import's own warning is still kept quiet
