import pytest
import torch

import vitlib
from vitlib import SimpleViT, ViT

SMALL = dict(num_classes=5, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=48)


def build(cls, image_size=16, patch_size=4, **kw):
    return cls(image_size=image_size, patch_size=patch_size, **{**SMALL, **kw})


def test_top_level_imports():
    assert vitlib.ViT is ViT and vitlib.SimpleViT is SimpleViT
    assert vitlib.MODELS["simple_vit"] is SimpleViT


@pytest.mark.parametrize("cls", [ViT, SimpleViT])
@pytest.mark.parametrize("image_size,patch_size", [(16, 4), ((16, 24), (4, 8)), ((12, 20), 4)])
def test_logits_shape(cls, image_size, patch_size):
    model = build(cls, image_size, patch_size)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert model(torch.randn(3, 3, h, w)).shape == (3, 5)


def test_vit_mean_pool_has_no_class_token():
    model = build(ViT, pool="mean")
    assert model.cls_token.numel() == 0 and model.pos_embedding.shape == (16, 32)
    assert build(ViT).pos_embedding.shape == (17, 32)


def test_blog_post_simple_vit_example_runs():
    model = SimpleViT(image_size=256, patch_size=32, num_classes=1000, dim=512, depth=6, heads=8, mlp_dim=1024)
    assert model(torch.randn(1, 3, 256, 256)).shape == (1, 1000)


@pytest.mark.parametrize("cls", [ViT, SimpleViT])
def test_attention_maps(cls):
    model = build(cls).eval()
    maps = model.attention_maps(torch.randn(2, 3, 16, 16))
    tokens = 17 if cls is ViT else 16
    assert len(maps) == 2 and maps[0].shape == (2, 2, tokens, tokens)


@pytest.mark.parametrize("cls", [ViT, SimpleViT])
def test_a_few_steps_fit_a_batch(cls):
    torch.manual_seed(0)
    model = build(cls)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 5
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


# ----- bad input ------------------------------------------------------------------------------


def test_non_tensor_is_rejected():
    with pytest.raises(TypeError, match="received list"):
        build(SimpleViT)([[0.0]])


@pytest.mark.parametrize("cls", [ViT, SimpleViT])
@pytest.mark.parametrize("image_size,patch_size,pattern", [
    (30, 4, r"image_size 30x30 must be divisible by patch_size 4x4; received remainders 2 \(height\) and 2"),
    ((16, 18), (4, 4), r"received remainders 0 \(height\) and 2 \(width\)"),
])
def test_indivisible_image_size(cls, image_size, patch_size, pattern):
    with pytest.raises(ValueError, match=pattern):
        build(cls, image_size, patch_size)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match=r"pool must be 'cls'.*received 'max'"):
        build(ViT, pool="max")
    with pytest.raises(ValueError, match=r"received depth=0"):
        build(ViT, depth=0)
    with pytest.raises(ValueError, match=r"received dropout=1.5"):
        build(ViT, dropout=1.5)
    with pytest.raises(ValueError, match=r"multiple of 4.*received 30"):
        build(SimpleViT, dim=30)
