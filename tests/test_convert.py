import random

import pytest
import torch
from vit_pytorch import SimpleViT as VPSimpleViT
from vit_pytorch import ViT as VPViT

from vitlib import SimpleViT, ViT
from vitlib.convert import from_vit_pytorch


def random_configs(n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        ph, pw = rng.choice([(4, 4), (8, 4), (4, 8), (2, 6)])
        gh, gw = rng.randint(1, 5), rng.randint(1, 5)
        heads = rng.choice([1, 2, 4])
        yield dict(
            image_size=gh * ph if (gh * ph, gw * pw) == (gh * ph,) * 2 else (gh * ph, gw * pw),
            patch_size=(ph, pw),
            num_classes=rng.randint(2, 11),
            dim=rng.choice([16, 32, 48]),
            depth=rng.randint(1, 4),
            heads=heads,
            dim_head=rng.choice([8, 16]),
            mlp_dim=rng.choice([24, 64]),
            channels=rng.choice([1, 3]),
        )


def _images(cfg, batch=3):
    h, w = cfg["image_size"] if isinstance(cfg["image_size"], tuple) else (cfg["image_size"],) * 2
    return torch.randn(batch, cfg["channels"], h, w)


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("cfg", list(random_configs(6, seed=1)), ids=lambda c: f"{c['image_size']}-{c['patch_size']}-d{c['depth']}")
def test_vit_parity(cfg, pool):
    torch.manual_seed(0)
    src = VPViT(pool=pool, dropout=0.1, emb_dropout=0.1, **cfg).eval()
    out = from_vit_pytorch(src, image_size=cfg["image_size"])
    assert isinstance(out, ViT) and not out.training
    assert out.config["pool"] == pool and out.config["dropout"] == 0.1 and out.config["emb_dropout"] == 0.1
    x = _images(cfg)
    with torch.no_grad():
        torch.testing.assert_close(out(x), src(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cfg", list(random_configs(8, seed=2)), ids=lambda c: f"{c['image_size']}-{c['patch_size']}-d{c['depth']}")
def test_simple_vit_parity_and_grid_recovered(cfg):
    torch.manual_seed(0)
    src = VPSimpleViT(**cfg).eval()
    out = from_vit_pytorch(src)  # the sin-cos table tells the grid: no image_size needed
    assert isinstance(out, SimpleViT)
    h, w = cfg["image_size"] if isinstance(cfg["image_size"], tuple) else (cfg["image_size"],) * 2
    assert out.patch_embedding.image_size == (h, w)
    x = _images(cfg)
    with torch.no_grad():
        torch.testing.assert_close(out(x), src(x), atol=1e-5, rtol=0)


def test_vit_with_square_grid_needs_no_image_size_and_identity_projection_maps():
    torch.manual_seed(0)
    src = VPViT(image_size=32, patch_size=8, num_classes=4, dim=32, depth=2, heads=1, dim_head=32, mlp_dim=64).eval()
    assert isinstance(src.transformer.layers[0][0].to_out, torch.nn.Identity)
    out = from_vit_pytorch(src)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(out(x), src(x), atol=1e-5, rtol=0)


def test_training_mode_is_kept():
    src = VPViT(image_size=16, patch_size=4, num_classes=3, dim=16, depth=1, heads=2, mlp_dim=16)
    assert from_vit_pytorch(src).training


def test_non_square_vit_grid_requires_image_size():
    src = VPViT(image_size=(8, 16), patch_size=4, num_classes=3, dim=16, depth=1, heads=2, mlp_dim=16)
    with pytest.raises(ValueError, match="8 patches, which is not a square grid; pass image_size"):
        from_vit_pytorch(src)
    with pytest.raises(ValueError, match=r"gives 16 patches; the model's position table holds 8"):
        from_vit_pytorch(src, image_size=16)


def test_unsupported_model():
    with pytest.raises(ValueError, match=r"received torch.nn.modules.linear.Linear"):
        from_vit_pytorch(torch.nn.Linear(2, 2))
