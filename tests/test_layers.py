import pytest
import torch
from einops import rearrange

from vitlib.layers import Attention, PatchEmbedding, SinCosPosEmb2d, attention, pair, posemb_sincos_2d


def test_fused_and_plain_attention_agree():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 17, 8).unbind(0)
    fused, none = attention(q, k, v, fused=True)
    plain, attn = attention(q, k, v, fused=False)
    assert none is None
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
    assert attn.shape == (2, 4, 17, 17)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 17))


def test_attention_module_returns_maps_and_same_output():
    torch.manual_seed(0)
    layer = Attention(dim=32, heads=4, dim_head=8).eval()
    x = torch.randn(2, 10, 32)
    out, maps = layer(x, return_attn=True)
    torch.testing.assert_close(out, layer(x), atol=1e-5, rtol=1e-5)
    assert maps.shape == (2, 4, 10, 10)


def test_patchify_matches_vit_pytorch_order():
    emb = PatchEmbedding((8, 12), (2, 4), channels=3, dim=16)
    img = torch.randn(2, 3, 8, 12)
    expected = rearrange(img, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=2, p2=4)
    assert torch.equal(emb.patchify(img), expected)


def test_sincos_table_is_a_buffer_not_a_parameter():
    pe = SinCosPosEmb2d((4, 6), 32)
    assert list(dict(pe.named_buffers())) == ["pe"]
    assert list(pe.parameters()) == []
    assert "pe" not in pe.state_dict()  # a function of grid and dim: not stored in checkpoints
    assert pe.pe.shape == (24, 32)
    assert pe.to(torch.float64).pe.dtype == torch.float64


def test_sincos_rows_are_distinct_and_row_major():
    pe = posemb_sincos_2d(3, 5, 16)
    assert torch.unique(pe, dim=0).shape[0] == 15
    # the x part (first quarter, frequency 1) of row r*5 + c is sin(c)
    torch.testing.assert_close(pe[7, 0], torch.sin(torch.tensor(2.0)))


@pytest.mark.parametrize("dim", [6, 4, 30])
def test_sincos_rejects_bad_dim(dim):
    with pytest.raises(ValueError, match=f"received {dim}"):
        posemb_sincos_2d(4, 4, dim)


@pytest.mark.parametrize("value", [0, -2, (3,), (2, 3, 4), 2.5, "8", True])
def test_pair_rejects(value):
    with pytest.raises(ValueError, match="received"):
        pair(value, "image_size")
