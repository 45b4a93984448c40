"""The attention backend switch (vitlib.layers.attention_backend) and the CPU linear layers
through oneDNN (vitlib.backends.linear): every model family gives the same outputs whichever path
runs, the switch is scoped, and attention maps still come from the plain path."""
import threading
import warnings

import pytest
import torch
from torch import nn

import vitlib
from vitlib import backends, bench, compat
from vitlib.layers import (
    ATTENTION_BACKENDS,
    Attention,
    attention,
    attention_backend,
    available_attention_backends,
    current_attention_backend,
    onednn_linear,
    record_attention,
)
from vitlib.models import MODELS, NaViTNested

pytestmark = pytest.mark.usefixtures("one_thread")

VIT = dict(image_size=16, patch_size=4, num_classes=5, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=48)
TINY = {
    "vit": VIT,
    "simple_vit": VIT,
    "distillable_vit": VIT,
    "navit": VIT,
    "levit": dict(image_size=32, num_classes=5, dim=(16, 24, 32), depth=1, heads=(2, 3, 4), mlp_mult=2,
                  dim_key=8, dim_value=8),
    "cross_vit": dict(image_size=16, num_classes=5, sm_dim=16, lg_dim=32, sm_patch_size=2, lg_patch_size=4,
                      sm_enc_heads=2, sm_enc_mlp_dim=32, sm_enc_dim_head=8, lg_enc_depth=1, lg_enc_heads=2,
                      lg_enc_mlp_dim=64, lg_enc_dim_head=8, cross_attn_depth=1, cross_attn_heads=2,
                      cross_attn_dim_head=8, depth=1),
}


def tiny(family: str):
    torch.manual_seed(0)
    model = MODELS[family](**TINY[family]).eval()
    with torch.no_grad():  # LeViT's residual branches start at zero: give every parameter a value
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def example(family: str, model):
    torch.manual_seed(1)
    if family == "navit":
        return [torch.randn(3, 16, 16), torch.randn(3, 8, 12), torch.randn(3, 12, 8)]
    return model.example_input(2)


def run(model, x):
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, torch.Tensor) else torch.stack(out)


def test_the_names_and_a_bad_one():
    assert ATTENTION_BACKENDS[:5] == ("plain", "sdpa", "flash", "efficient", "math")
    with pytest.raises(ValueError, match=r"one of \('plain', 'sdpa', 'flash'"):
        attention_backend("fast")
    assert vitlib.attention_backend is attention_backend is vitlib.layers.attention_backend


@pytest.mark.parametrize("family", sorted(TINY))
def test_every_family_agrees_across_backends(family):
    model = tiny(family)
    x = example(family, model)
    reference = run(model, x)
    for name in available_attention_backends("cpu"):  # plain, sdpa, math and torch's CPU flash kernel
        with attention_backend(name):
            torch.testing.assert_close(run(model, x), reference, atol=2e-5, rtol=1e-4,
                                       msg=f"{family} on {name}")


@pytest.mark.parametrize("family", sorted(TINY))
def test_the_switch_reaches_every_attention_of_every_family(family, monkeypatch):
    model = tiny(family)
    x = example(family, model)
    seen = []
    real = backends.sdpa
    monkeypatch.setattr(vitlib.layers, "sdpa", lambda *a: seen.append(a[-1]) or real(*a))
    run(model, x)
    calls = len(seen)
    assert calls > 0 and set(seen) == {None}
    with attention_backend("plain"):
        run(model, x)
    assert len(seen) == calls  # no SDPA call at all
    with attention_backend("math"):
        run(model, x)
    assert seen[calls:] == ["math"] * calls


def test_nesting_restores_and_exceptions_unwind():
    assert current_attention_backend() is None
    with attention_backend("plain") as name:
        assert name == "plain" == current_attention_backend()
        with attention_backend("math"):
            assert current_attention_backend() == "math"
            with attention_backend(None):
                assert current_attention_backend() is None
            assert current_attention_backend() == "math"
        assert current_attention_backend() == "plain"
        with pytest.raises(KeyError), attention_backend("sdpa"):
            raise KeyError("inside")
        assert current_attention_backend() == "plain"
    assert current_attention_backend() is None
    # one object entered twice (a decorator, or re-entered) unwinds in order
    same = attention_backend("math")
    with same, same:
        assert current_attention_backend() == "math"
    assert current_attention_backend() is None

    @attention_backend("plain")
    def inside():
        return current_attention_backend()

    assert inside() == "plain" and current_attention_backend() is None


def test_the_choice_belongs_to_its_thread():
    seen = []
    with attention_backend("plain"):
        worker = threading.Thread(target=lambda: seen.append(current_attention_backend()))
        worker.start()
        worker.join()
    assert seen == [None]


def test_maps_come_from_the_plain_path_whatever_the_backend():
    torch.manual_seed(0)
    layer = Attention(dim=32, heads=2, dim_head=16).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        for name in ("sdpa", "math", "flash", None):
            with attention_backend(name):
                out, maps = layer(x, return_attn=True)
                assert maps.shape == (2, 2, 7, 7)
                torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 7))
                torch.testing.assert_close(layer(x), out, atol=1e-5, rtol=1e-5)
    model = tiny("vit")
    img = model.example_input(1)
    with attention_backend("flash"):
        maps = model.attention_maps(img)
        with record_attention(model, maps=True) as calls:
            run(model, img)
    assert len(maps) == len(calls) == VIT["depth"] and all(m.shape == (1, 2, 17, 17) for m in maps)
    q, k, v = torch.randn(3, 1, 2, 5, 8).unbind(0)
    with attention_backend("sdpa"):
        assert attention(q, k, v, fused=False)[1] is None  # the block wins over a module's flag ...
        assert attention(q, k, v, maps=True)[1].shape == (1, 2, 5, 5)  # ... but not over a request for maps
    with attention_backend("plain"):
        assert attention(q, k, v, fused=True)[1].shape == (1, 2, 5, 5)


def test_a_kernel_missing_here_is_named():
    q = torch.randn(1, 2, 5, 8)
    here = available_attention_backends("cpu")
    assert {"plain", "sdpa", "math"} <= set(here) and set(here) <= set(ATTENTION_BACKENDS)
    missing = [name for name in ATTENTION_BACKENDS if name not in here]
    if not missing:
        pytest.skip("every SDPA kernel runs on this CPU")
    with attention_backend(missing[0]), warnings.catch_warnings(), \
            pytest.raises(RuntimeError, match=rf"backend '{missing[0]}' cannot run these inputs on cpu"):
        warnings.simplefilter("ignore")  # torch's own reasons, where it gives them
        attention(q, q, q)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_nested_tensors_run_on_sdpa_kernels_and_name_the_plain_path():
    torch.manual_seed(0)
    model = NaViTNested(**VIT).eval()
    imgs = [torch.randn(3, 16, 16), torch.randn(3, 8, 12)]
    reference = run(model, imgs)
    with attention_backend("math"):
        torch.testing.assert_close(run(model, imgs), reference, atol=1e-5, rtol=1e-5)
    with attention_backend("plain"), pytest.raises(ValueError, match="plain attention path needs padded"):
        run(model, imgs)


def test_flops_counted_alike_on_every_backend():
    model = tiny("vit")
    x = model.example_input(2)
    fused = bench.count_flops(model, x, backward=True)
    with attention_backend("plain"):
        assert bench.count_flops(model, x, backward=True) == fused


def test_compiled_model_follows_the_switch():
    model = tiny("vit")
    x = model.example_input(2)
    compiled = torch.compile(model, backend="eager")
    reference = run(model, x)
    for name in ("plain", "math", None):
        with attention_backend(name):
            torch.testing.assert_close(run(compiled, x), reference, atol=2e-5, rtol=1e-4)


# ----- linear layers through oneDNN ---------------------------------------------------------------


@pytest.fixture
def every_product(monkeypatch):
    """The oneDNN path for products of any size (tiny models stay under the threshold otherwise)."""
    monkeypatch.setattr(backends, "ONEDNN_MIN_MACS", 0)
    if not compat.onednn_linear_works():
        pytest.skip("this torch has no oneDNN linear kernel")


def count_onednn(monkeypatch) -> list:
    calls = []
    real = torch.ops.mkldnn._linear_pointwise

    class Spy:
        def __call__(self, *args):
            calls.append("linear")
            return real(*args)

        def binary(self, *args):
            calls.append("binary")
            return real.binary(*args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", Spy())
    return calls


@pytest.mark.parametrize("family", sorted(TINY))
def test_every_family_agrees_with_and_without_onednn(family, every_product, monkeypatch):
    model = tiny(family)
    x = example(family, model)
    with onednn_linear(False):
        reference = run(model, x)
    calls = count_onednn(monkeypatch)
    torch.testing.assert_close(run(model, x), reference, atol=2e-5, rtol=1e-4)
    if family != "levit":  # LeViT's layers are convolutions
        assert "binary" in calls  # residual sums fused into the last layer of a branch
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference, atol=2e-5, rtol=1e-4)


def test_training_hooks_autocast_and_counting_keep_nn_linear(every_product, monkeypatch):
    model = tiny("vit")
    x = model.example_input(2)
    calls = count_onednn(monkeypatch)
    model.train()
    model(x).sum().backward()  # gradients wanted: nn.Linear
    assert calls == [] and model.head.weight.grad is not None
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16
    bench.count_flops(model, x)  # a FLOP counter watches: nn.Linear, every product counted
    with onednn_linear(False), torch.no_grad():
        model(x)
    assert calls == []
    # a hook on a branch sees the branch's own output, not the residual sum
    outputs = []
    block = model.transformer.blocks[0]
    handle = block.attn.register_forward_hook(lambda m, a, out: outputs.append(out))
    with torch.no_grad():
        x_in = model.embed(x)
        block(x_in)
        with onednn_linear(False):
            expected = block.attn(x_in)
    handle.remove()
    torch.testing.assert_close(outputs[0], expected, atol=1e-5, rtol=1e-5)
    hooked = model.transformer.blocks[1].ff.fc1
    handle = hooked.register_forward_hook(lambda m, a, out: outputs.append(out))
    with torch.no_grad():
        model(x)
    handle.remove()
    assert outputs[-1].shape[-1] == VIT["mlp_dim"]  # the hooked layer ran as nn.Linear


def test_linear_checks_its_arguments():
    layer = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="act must be None or 'gelu'"):
        backends.linear(torch.randn(2, 4), layer, act="relu")
    with pytest.raises(ValueError, match="not combine with a residual"):
        backends.linear(torch.randn(2, 4), layer, act="gelu", residual=torch.randn(2, 3))
