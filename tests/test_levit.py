import random

import pytest
import torch
from torch import nn
from vit_pytorch.levit import LeViT as VPLeViT

import vitlib
from vitlib import LeViT
from vitlib.convert import from_vit_pytorch
from vitlib.fuse import fold_batchnorm, fuse_batchnorm
from vitlib.layers import attention_backend
from vitlib.models.levit import LeViTAttention, relative_offset_indices


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = dict(num_classes=5, dim=(16, 24, 32), depth=1, heads=2, mlp_mult=2, dim_key=8, dim_value=8)


def build(image_size=32, **kw):
    return LeViT(image_size=image_size, **{**SMALL, **kw})


@torch.no_grad()
def randomise(model: nn.Module, images: torch.Tensor, steps: int = 3) -> nn.Module:
    """Non-trivial BatchNorm affine parameters, attention biases and running statistics
    (vit-pytorch zero-initialises some BatchNorm weights, which would hide the attention)."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            m.momentum = 0.5
        if isinstance(m, nn.Embedding):
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.1)
        if isinstance(m, LeViTAttention):
            m.attention_biases.copy_(torch.randn(m.attention_biases.shape, generator=gen))
    model.train()
    for _ in range(steps):
        model(images * 2 + 0.5)  # running stats away from (0, 1)
    return model.eval()


def random_configs(n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        stages = rng.choice([1, 2, 3])
        yield dict(
            image_size=rng.choice([32, 48, 64]),
            num_classes=rng.randint(2, 7),
            dim=tuple(rng.choice([8, 16, 24]) for _ in range(stages)),
            depth=tuple(rng.randint(1, 2) for _ in range(stages)) if rng.random() < 0.5 else rng.randint(1, 2),
            heads=rng.choice([1, 2, 3]),
            mlp_mult=rng.choice([1, 2, 3]),
            stages=stages,
            dim_key=rng.choice([4, 8]),
            dim_value=rng.choice([4, 8, 12]),
            num_distill_classes=rng.choice([None, 3]),
        )


PARITY_CONFIGS = list(random_configs(3, seed=3)) + [
    # three stages, per-stage widths, depths and heads, distillation
    dict(image_size=64, num_classes=5, dim=(16, 24, 32), depth=(1, 2, 1), heads=(2, 3, 4), mlp_mult=2, stages=3,
         dim_key=8, dim_value=8, num_distill_classes=3),
    # 32 px: maps of 2x2, then 1x1, then 1x1 again (a stride-2 query on a 1x1 map)
    dict(image_size=32, num_classes=3, dim=16, depth=1, heads=2, mlp_mult=2, stages=3, dim_key=4, dim_value=8),
]


@pytest.mark.parametrize("cfg", PARITY_CONFIGS,
                         ids=lambda c: f"{c['image_size']}px-{c['stages']}st-d{c['depth']}")
def test_parity_with_vit_pytorch_including_running_stats(cfg):
    torch.manual_seed(0)
    size = cfg["image_size"]
    src = randomise(VPLeViT(dropout=0.1, **cfg), torch.randn(4, 3, size, size))
    out = from_vit_pytorch(src)
    assert isinstance(out, LeViT) and not out.training
    assert out.config["stem_activation"] is False and out.config["stages"] == cfg["stages"]
    assert out.config["dropout"] == 0.1 and out.config["num_distill_classes"] == cfg.get("num_distill_classes")
    # BatchNorm running statistics came across
    bn_src = src.backbone[0].layers[0][0].to_q[1]
    bn_out = out.backbone[0].blocks[0].attn.to_q[1]
    assert torch.equal(bn_src.running_mean, bn_out.running_mean) and bn_src.running_mean.abs().sum() > 0
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        expected, got = src(x), out(x)
    if cfg.get("num_distill_classes") is None:
        expected, got = (expected,), (got,)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0)
    # vitlib's model rebuilds from its config
    assert LeViT(**out.config).load_state_dict(out.state_dict()) is not None


def test_converted_stem_has_vit_pytorchs_layout():
    src = VPLeViT(image_size=32, num_classes=3, dim=16, depth=1, heads=2, mlp_mult=2, stages=2, dim_key=8, dim_value=8)
    out = from_vit_pytorch(src)
    assert [type(m) for m in out.stem] == [nn.Conv2d] * 4
    assert [k.replace("stem.", "") for k in out.state_dict() if k.startswith("stem.")] == \
        [k.replace("conv_embedding.", "") for k in src.state_dict() if k.startswith("conv_embedding.")]
    assert out.training  # mode kept


# ----- the paper's architecture -------------------------------------------------------------------


@torch.no_grad()
def test_default_stem_is_not_affine_and_affine_stem_is():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    zero = torch.zeros(2, 3, 32, 32)
    for activation in (True, False):
        stem = randomise(build(stem_activation=activation), torch.randn(4, 3, 32, 32)).stem
        gap = (stem(x + y) - (stem(x) + stem(y) - stem(zero))).abs().max().item()
        if activation:
            assert gap > 1e-2, "the default stem should be nonlinear"
            kinds = [type(m) for m in stem]
            assert kinds.count(nn.Hardswish) == 3 and kinds.count(nn.BatchNorm2d) == 4
            assert kinds.count(nn.Conv2d) == 4
        else:
            assert gap < 1e-4, "stem_activation=False is vit-pytorch's affine stem"


def test_attention_bias_table_is_a_parameter_indexed_by_relative_offsets():
    model = build(image_size=48, stages=2, dim=(16, 24), heads=(2, 3))
    attn = model.backbone[0].blocks[0].attn  # 3x3 map
    params = dict(attn.named_parameters())
    assert "attention_biases" in params and params["attention_biases"].shape == (2, 9)
    assert "attention_bias_idxs" not in model.state_dict() and "pos_embedding" not in params
    idx = attn.attention_bias_idxs
    assert idx.shape == (9, 9)
    for i in range(9):
        for j in range(9):
            (qy, qx), (ky, kx) = divmod(i, 3), divmod(j, 3)
            assert idx[i, j] == abs(qy - ky) * 3 + abs(qx - kx)
    # shrinking attention: queries every other position (2x2 of the 3x3 map), keys everywhere
    shrink = model.backbone[1].blocks[0].attn
    assert shrink.heads == 4 and shrink.attention_bias_idxs.shape == (4, 9)
    assert shrink.attention_bias_idxs[3].tolist() == relative_offset_indices((3, 3))[8].tolist()
    # a residual branch starts at zero (its last BatchNorm's weight is 0), a shrinking one does not
    assert attn.to_out[2].weight.abs().sum() == 0 and shrink.to_out[2].weight.abs().sum() > 0
    # the table is learned: it gets gradients
    with torch.no_grad():
        attn.to_out[2].weight.fill_(1.0)
    model(torch.randn(2, 3, 48, 48)).sum().backward()
    for a in (attn, shrink):
        assert a.attention_biases.grad is not None and a.attention_biases.grad.abs().sum() > 0


def test_rectangular_offsets():
    idx = relative_offset_indices((2, 3))
    assert idx.shape == (6, 6) and idx.max() == 5
    assert idx[0, 5] == 1 * 3 + 2  # (0, 0) to (1, 2)


def test_shrinking_attention_halves_the_map_and_grows_channels():
    model = build(image_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        shapes = []
        h = model.stem(x)
        shapes.append(tuple(h.shape[1:]))
        for stage in model.backbone:
            h = stage(h)
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(16, 4, 4), (16, 4, 4), (24, 2, 2), (24, 2, 2), (32, 1, 1), (32, 1, 1)]


def test_batchnorm_after_projections():
    attn = build().backbone[0].blocks[0].attn
    for seq in (attn.to_q, attn.to_k, attn.to_v):
        assert isinstance(seq[0], nn.Conv2d) and isinstance(seq[1], nn.BatchNorm2d)
    assert isinstance(attn.to_out[1], nn.Conv2d) and isinstance(attn.to_out[2], nn.BatchNorm2d)


def test_fused_and_plain_attention_agree():
    torch.manual_seed(0)
    model = randomise(build(image_size=48), torch.randn(4, 3, 48, 48))
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        fused = model(x)
        with attention_backend("plain"):
            torch.testing.assert_close(model(x), fused, atol=1e-5, rtol=1e-5)


def test_distillation_head_shapes():
    model = build(num_distill_classes=7).eval()
    logits, distill = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 5) and distill.shape == (4, 7)
    assert build().distill_head is None
    assert build()(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_rectangular_images_and_top_level_names():
    assert vitlib.LeViT is LeViT and vitlib.MODELS["levit"] is LeViT
    model = build(image_size=(32, 64))
    assert model(torch.randn(2, 3, 32, 64)).shape == (2, 5)


# ----- fusion -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stem_activation", [True, False])
def test_fuse_keeps_logits_and_removes_every_batchnorm(stem_activation):
    torch.manual_seed(0)
    model = randomise(build(image_size=64, num_distill_classes=3, stem_activation=stem_activation),
                      torch.randn(4, 3, 64, 64))
    fused = model.fuse()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0  # the original is untouched
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), fused(x), strict=True):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())


def test_fuse_refuses_training_mode():
    model = build()
    with pytest.raises(ValueError, match=r"eval mode.*received one in training mode"):
        model.fuse()
    with pytest.raises(ValueError, match="training mode"):
        fuse_batchnorm(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))


@torch.no_grad()
def test_fuse_linear_and_conv_pairs():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(6, 4, bias=False), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 5), nn.BatchNorm1d(5))
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, groups=1), nn.BatchNorm2d(4, affine=False), nn.Conv2d(4, 4, 1, groups=2),
                         nn.BatchNorm2d(4))
    for model, shape in ((seq, (8, 6)), (conv, (2, 3, 7, 7))):
        model.train()
        for _ in range(3):
            model(torch.randn(*shape) * 3 + 1)
        model.eval()
        fused = fuse_batchnorm(model)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
        x = torch.randn(*shape)
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="normalises 3 channels.*produces 4"):
        fold_batchnorm(nn.Linear(2, 4), nn.BatchNorm1d(3).eval())


# ----- bad input ------------------------------------------------------------------------------------


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match=r"divisible by 16; received 40x40 \(remainders 8 and 8\)"):
        build(image_size=40)
    with pytest.raises(ValueError, match=r"divisible by 16; received 32x20"):
        build(image_size=(32, 20))
    with pytest.raises(ValueError, match=r"dim must be an int or a tuple of at most stages=2.*received \(8, 8, 8\)"):
        build(dim=(8, 8, 8), stages=2)
    with pytest.raises(ValueError, match=r"received depth\[1\]=0"):
        build(depth=(1, 0, 1))
    with pytest.raises(ValueError, match=r"received num_distill_classes=0"):
        build(num_distill_classes=0)
    with pytest.raises(ValueError, match=r"received dropout=1.5"):
        build(dropout=1.5)
