import random

import pytest
import torch
from torch import nn
from vit_pytorch.cross_vit import Attention as VPCrossAttention
from vit_pytorch.cross_vit import CrossViT as VPCrossViT

import vitlib
from vitlib import CrossViT
from vitlib.convert import from_vit_pytorch
from vitlib.layers import Attention


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = dict(num_classes=4, sm_dim=16, lg_dim=24, sm_patch_size=4, lg_patch_size=8, sm_enc_depth=1, sm_enc_heads=2,
             sm_enc_mlp_dim=32, sm_enc_dim_head=8, lg_enc_depth=1, lg_enc_heads=2, lg_enc_mlp_dim=32,
             lg_enc_dim_head=8, cross_attn_depth=1, cross_attn_heads=2, cross_attn_dim_head=8, depth=2)


def build(image_size=32, **kw):
    return CrossViT(image_size=image_size, **{**SMALL, **kw})


def random_configs(n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        sm_patch, lg_patch = rng.choice([(4, 8), (8, 16), (6, 12)])
        sm_dim = rng.choice([16, 24])
        yield dict(
            image_size=lg_patch * rng.randint(2, 3),
            num_classes=rng.randint(2, 7),
            sm_dim=sm_dim,
            lg_dim=rng.choice([sm_dim, 32]),  # equal widths: no projection around the cross-attention
            sm_patch_size=sm_patch,
            lg_patch_size=lg_patch,
            sm_enc_depth=rng.randint(1, 2),
            sm_enc_heads=rng.choice([1, 2]),
            sm_enc_mlp_dim=rng.choice([16, 32]),
            sm_enc_dim_head=rng.choice([4, 8]),
            lg_enc_depth=rng.randint(1, 2),
            lg_enc_heads=rng.choice([1, 2, 3]),
            lg_enc_mlp_dim=rng.choice([16, 48]),
            lg_enc_dim_head=rng.choice([8, 16]),
            cross_attn_depth=rng.randint(1, 2),
            cross_attn_heads=rng.choice([1, 2]),
            cross_attn_dim_head=rng.choice([8, 16]),
            depth=rng.randint(1, 2),
            channels=rng.choice([1, 3]),
        )


@pytest.mark.parametrize("cfg", list(random_configs(5, seed=4)),
                         ids=lambda c: f"{c['image_size']}px-{c['sm_dim']}x{c['lg_dim']}-d{c['depth']}")
def test_parity_with_vit_pytorch(cfg):
    torch.manual_seed(0)
    src = VPCrossViT(dropout=0.1, emb_dropout=0.2, **cfg).eval()
    out = from_vit_pytorch(src)
    assert isinstance(out, CrossViT) and not out.training
    assert out.config == {**cfg, "dropout": 0.1, "emb_dropout": 0.2}
    same = cfg["sm_dim"] == cfg["lg_dim"]
    assert isinstance(out.layers[0].sm_attend_lg[0].project_in, nn.Identity) == same
    s = cfg["image_size"]
    x = torch.randn(3, cfg["channels"], s, s)
    with torch.no_grad():
        torch.testing.assert_close(out(x), src(x), atol=1e-5, rtol=0)


def test_training_mode_kept_and_config_rebuilds():
    src = VPCrossViT(image_size=32, **SMALL)
    out = from_vit_pytorch(src)
    assert out.training
    CrossViT(**out.config).load_state_dict(out.state_dict())


def test_top_level_names_and_shapes():
    assert vitlib.CrossViT is CrossViT and vitlib.MODELS["cross_vit"] is CrossViT
    model = build().eval()
    sm, lg = model.forward_features(torch.randn(2, 3, 32, 32))
    assert sm.shape == (2, 1 + 64, 16) and lg.shape == (2, 1 + 16, 24)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert build(image_size=(16, 32))(torch.randn(2, 3, 16, 32)).shape == (2, 4)


def test_every_attention_is_the_shared_class():
    model = build()
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    # 2 layers x (1 sm + 1 lg encoder blocks + 2 cross blocks)
    assert len(attns) == 2 * (1 + 1 + 2)
    assert {type(m) for m in model.modules() if "Attention" in type(m).__name__} == {Attention}


# ----- the Attention extension ----------------------------------------------------------------------


def test_cross_attention_matches_vit_pytorch_and_separate_projections():
    torch.manual_seed(0)
    ref = VPCrossAttention(16, heads=2, dim_head=8).eval()
    ours = Attention(16, heads=2, dim_head=8).eval()
    ours.load_state_dict({
        "norm.weight": ref.norm.weight, "norm.bias": ref.norm.bias,
        "to_qkv.weight": torch.cat((ref.to_q.weight, ref.to_kv.weight)),
        "to_out.weight": ref.to_out[0].weight, "to_out.bias": ref.to_out[0].bias,
    })
    cls, ctx = torch.randn(3, 1, 16), torch.randn(3, 9, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(cls, context=ctx, kv_include_self=True),
                                   ref(cls, context=ctx, kv_include_self=True), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(cls, context=ctx), ref(cls, context=ctx), atol=1e-5, rtol=0)
        # self-attention through to_q / to_kv equals the fused to_qkv path
        x = torch.randn(2, 5, 16)
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
        # fused and plain paths agree for cross-attention too; the map has one row per query
        out, attn = ours(cls, True, context=ctx, kv_include_self=True)
        torch.testing.assert_close(out, ours(cls, context=ctx, kv_include_self=True), atol=1e-5, rtol=1e-5)
        assert attn.shape == (3, 2, 1, 10)


def test_self_attention_path_unchanged():
    torch.manual_seed(0)
    layer = Attention(dim=32, heads=4, dim_head=8).eval()
    assert [n for n, _ in layer.named_parameters()] == ["norm.weight", "norm.bias", "to_qkv.weight", "to_out.weight",
                                                       "to_out.bias"]
    x = torch.randn(2, 7, 32)
    out, maps = layer(x, True)  # positional return_attn still works
    assert maps.shape == (2, 4, 7, 7)
    torch.testing.assert_close(layer(x), out, atol=1e-5, rtol=1e-5)


def test_cross_attention_bad_context():
    layer = Attention(dim=16, heads=2, dim_head=8)
    x = torch.randn(2, 1, 16)
    with pytest.raises(ValueError, match="kv_include_self=True needs a context"):
        layer(x, kv_include_self=True)
    with pytest.raises(ValueError, match=r"context must be a tensor of shape \(batch=2, tokens, dim=16\).*"
                                         r"received shape \(2, 5, 8\)"):
        layer(x, context=torch.randn(2, 5, 8))


# ----- bad input ------------------------------------------------------------------------------------


def test_indivisible_image_size_and_bad_hyperparameters():
    with pytest.raises(ValueError, match=r"image_size 36x36 must be divisible by lg_patch_size 8x8; "
                                         r"received remainders 4 \(height\) and 4"):
        build(image_size=36)
    with pytest.raises(ValueError, match=r"divisible by sm_patch_size 5x5; received remainders 2"):
        build(image_size=32, sm_patch_size=5)
    with pytest.raises(ValueError, match=r"received cross_attn_depth=0"):
        build(cross_attn_depth=0)
    with pytest.raises(ValueError, match=r"received emb_dropout=1.0"):
        build(emb_dropout=1.0)


def test_class_tokens_and_positions_are_filed_as_such():
    """CrossViT's class tokens and learned positions count as "positions + tokens", so that what is
    left under "other" is norms alone."""
    from vitlib import bench
    from vitlib.bench.counting import _components, owner_of
    from vitlib.models import presets

    with torch.device("meta"):
        model = presets.create("CrossViT-Ti")
    split = bench.parameters_by_component(model)
    tokens = sum(p.numel() for n, p in model.named_parameters() if n.endswith(("cls_token", "pos_embedding")))
    assert tokens > 0 and split["positions + tokens"] == tokens
    kinds = _components(model)
    unfiled = [n for n, _ in model.named_parameters() if owner_of(n, kinds) is None]
    assert unfiled and all(".norm" in n or n.startswith("norm") for n in unfiled), unfiled
