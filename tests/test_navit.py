import copy
import math
import pickle
import random
import re

import pytest
import torch
from vit_pytorch.na_vit import NaViT as VPNaViT
from vit_pytorch.na_vit_nested_tensor import NaViT as VPNaViTNested

import vitlib
from vitlib import NaViT, NaViTNested
from vitlib.convert import from_vit_pytorch
from vitlib.layers import Attention, HeadRMSNorm, attention_backend
from vitlib.models.na_vit import (
    _shuffle_within,
    expected_kept_tokens,
    floor_kept_tokens,
    kept_tokens,
    max_kept_tokens,
    pack_greedy,
    pack_plan,
    pack_sequences,
    padding_fraction,
)

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # torch's CPU fallback for jagged attention builds a strided nested tensor, which warns
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage"),
    # dynamic quantisation still works, but torch announces its move to torchao
    pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor"),
]

SMALL = dict(image_size=32, patch_size=8, num_classes=5, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64)
SIZES = [(32, 32), (16, 8), (8, 24), (32, 16), (8, 8), (24, 32)]


def images(sizes=SIZES, channels=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(channels, h, w, generator=gen) for h, w in sizes]


def build(**kw):
    torch.manual_seed(0)
    return NaViT(**{**SMALL, **kw}).eval()


# ----- parity with vit-pytorch -------------------------------------------------------------------


@torch.no_grad()
def perturb_gains(model):
    """vit-pytorch initialises its norm gains to one: move them, so that the conversion of each is tested."""
    gen = torch.Generator().manual_seed(3)
    for name, p in model.named_parameters():
        if name.endswith("gamma"):
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)


def random_configs(n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        patch = rng.choice([4, 8])
        grid = rng.randint(3, 6)
        yield dict(
            image_size=grid * patch,
            patch_size=patch,
            num_classes=rng.randint(2, 7),
            dim=rng.choice([16, 32]),
            depth=rng.randint(1, 3),
            heads=rng.choice([1, 2, 4]),
            dim_head=rng.choice([8, 16]),
            mlp_dim=rng.choice([24, 64]),
            channels=rng.choice([1, 3]),
        )


@pytest.mark.parametrize("cfg", list(random_configs(5, seed=4)), ids=lambda c: f"{c['image_size']}-p{c['patch_size']}-d{c['depth']}")
def test_parity_with_vit_pytorch_on_mixed_resolutions(cfg):
    torch.manual_seed(0)
    src = VPNaViT(dropout=0.1, emb_dropout=0.1, token_dropout_prob=0.25, **cfg).eval()
    perturb_gains(src)
    out = from_vit_pytorch(src)
    assert isinstance(out, NaViT) and not out.training
    assert out.config["token_dropout_prob"] == 0.25 and out.config["dropout"] == 0.1
    assert out.token_dropout_rounding == out.config["token_dropout_rounding"] == "floor"  # vit-pytorch's rule
    p, side = cfg["patch_size"], cfg["image_size"]
    rng = random.Random(cfg["dim"] + cfg["depth"])
    sizes = [(rng.randint(1, side // p) * p, rng.randint(1, side // p) * p) for _ in range(7)]
    imgs = images(sizes, cfg["channels"])
    max_len = (side // p) ** 2
    with torch.no_grad():
        torch.testing.assert_close(out(imgs, group_images=True, group_max_seq_len=max_len),
                                   src(imgs, group_images=True, group_max_seq_len=max_len), atol=1e-5, rtol=0)
        grouped = [imgs[:3], imgs[3:4], imgs[4:]]
        torch.testing.assert_close(out(grouped), src(grouped), atol=1e-5, rtol=0)


def test_conversion_keeps_a_callable_token_dropout_and_rejects_the_nested_model():
    def rate(h, w):
        return 0.5 if h * w > 256 else 0.0

    src = VPNaViT(token_dropout_prob=rate, **SMALL)
    assert from_vit_pytorch(src).token_dropout_prob is rate
    assert from_vit_pytorch(VPNaViT(**SMALL)).token_dropout_prob is None
    with pytest.raises(ValueError, match="mean-centred LayerNorm"):
        from_vit_pytorch(VPNaViTNested(**SMALL))


def test_exported_from_the_package():
    assert vitlib.NaViT is NaViT and vitlib.NaViTNested is NaViTNested
    assert vitlib.MODELS["navit"] is NaViT  # trainable by name, like the other families (it takes a list)


# ----- the shared attention's additions ----------------------------------------------------------


def test_masked_attention_with_qk_norm_fused_and_plain_agree():
    torch.manual_seed(0)
    layer = Attention(dim=32, heads=2, dim_head=16, qk_norm=True, out_bias=False).eval()
    with torch.no_grad():
        layer.q_norm.weight.uniform_(0.5, 2.0)
    x = torch.randn(2, 7, 32)
    ids = torch.tensor([[0, 0, 0, 1, 1, -1, -1], [0, 1, 1, 1, 1, 1, 1]])
    mask = (ids[:, :, None] == ids[:, None, :])[:, None]
    plain, maps = layer(x, return_attn=True, mask=mask)
    torch.testing.assert_close(layer(x, mask=mask), plain, atol=1e-5, rtol=1e-5)
    assert (maps.masked_select(~mask) == 0).all()
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 7))


def test_head_rms_norm_is_vit_pytorchs_normalise_times_sqrt_dim():
    norm = HeadRMSNorm(heads=3, dim_head=8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    x = torch.randn(2, 5, 3, 8)
    expected = torch.nn.functional.normalize(x, dim=-1) * 8**0.5 * norm.weight
    torch.testing.assert_close(norm(x), expected, atol=1e-6, rtol=1e-5)


# ----- packing -----------------------------------------------------------------------------------


def random_lengths(rng):
    max_len = rng.choice([16, 64, 196, 256, 1024, 2048])
    n = rng.randint(1, 50)
    if rng.random() < 0.5:
        sizes = rng.sample([4, 16, 36, 49, 64, 100, 144, 196, 256], 3)
        return [min(max_len, rng.choice(sizes)) for _ in range(n)], max_len
    return [rng.randint(1, max(1, max_len // rng.choice([1, 2, 4, 8]))) for _ in range(n)], max_len


def test_packing_places_every_image_once_within_max_len_and_never_pads_more_than_greedy():
    rng = random.Random(0)
    better = 0
    for _ in range(300):
        lengths, max_len = random_lengths(rng)
        for pack in (pack_sequences, pack_greedy):
            groups = pack(lengths, max_len)
            assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
            assert all(g and sum(lengths[i] for i in g) <= max_len for g in groups)
        ours = padding_fraction(lengths, pack_sequences(lengths, max_len))
        greedy = padding_fraction(lengths, pack_greedy(lengths, max_len))
        assert ours <= greedy + 1e-12
        better += ours < greedy - 1e-12
    assert better > 150  # strictly better on most random cases, not only as good


def test_first_fit_decreasing_fills_the_gaps_greedy_leaves():
    lengths = [6, 5, 5, 4]
    assert pack_greedy(lengths, 10) == [[0], [1, 2], [3]]
    assert sorted(map(sorted, pack_sequences(lengths, 10))) == [[0, 3], [1, 2]]
    assert padding_fraction(lengths, pack_sequences(lengths, 10)) == 0.0
    assert padding_fraction(lengths, pack_greedy(lengths, 10)) == pytest.approx(1 - 20 / 30)


def test_packing_balances_sequences_when_max_len_is_loose():
    lengths = [196] * 32
    groups = pack_sequences(lengths, 2048)  # first fit alone: 10 + 10 + 10 + 2 images, 20 % padding
    assert len(groups) == 4 and padding_fraction(lengths, groups) == 0.0


@pytest.mark.parametrize("bad, match", [
    (dict(lengths=[3, 11], max_len=10), "at most max_len=10; received 11 at index 1"),
    (dict(lengths=[3, 0], max_len=10), "positive ints; received 0 at index 1"),
    (dict(lengths=[3], max_len=0), "max_len must be a positive int; received 0"),
])
def test_packing_rejects_bad_lengths(bad, match):
    with pytest.raises(ValueError, match=match):
        pack_sequences(**bad)


def test_padding_fraction_checks_the_groups():
    with pytest.raises(ValueError, match="exactly once"):
        padding_fraction([1, 2, 3], [[0, 1], [1, 2]])


# ----- order, masking, padding -------------------------------------------------------------------


@torch.no_grad()
def test_each_row_is_the_logits_of_that_image_alone():
    model = build()
    sizes = SIZES + [(16, 16), (32, 8)]
    random.Random(1).shuffle(sizes)
    imgs = images(sizes)
    alone = torch.cat([model([img]) for img in imgs])
    for kwargs in (dict(), dict(group_images=True, group_max_seq_len=16), dict(group_images=True, group_max_seq_len=None)):
        torch.testing.assert_close(model(imgs, **kwargs), alone, atol=1e-5, rtol=0)
    grouped = [imgs[:1], imgs[1:5], imgs[5:]]  # uneven groups: padding and empty pooling slots
    torch.testing.assert_close(model(grouped), alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["sdpa", "plain"])  # torch's SDPA may hide a fully masked row; plain does not
def test_padding_makes_no_nan_in_training(backend):
    model = build(token_dropout_prob=0.5).train()
    imgs = [img.requires_grad_() for img in images()]
    with attention_backend(backend):
        out = model([imgs[:1], imgs[1:]])  # the first sequence is mostly padding
    assert torch.isfinite(out).all()
    out.sum().backward()
    for p in model.parameters():
        assert torch.isfinite(p.grad).all()
    assert all(torch.isfinite(img.grad).all() for img in imgs)


def test_plan_layout_matches_the_groups():
    grids, lengths, groups = [(2, 3), (1, 1), (3, 3)], [6, 1, 4], [[2, 1], [0]]
    plan = pack_plan(grids, lengths, groups)
    assert plan.ids.shape == (2, 6)
    assert plan.ids.tolist() == [[0, 0, 0, 0, 1, -1], [0, 0, 0, 0, 0, 0]]
    assert plan.rows[:6].tolist() == [0, 0, 0, 1, 1, 1] and plan.cols[:6].tolist() == [0, 1, 2, 0, 1, 2]
    assert plan.keep.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # images 0 and 1 whole, image 2: 4 of 9
    assert plan.out_index.tolist() == [2, 1, 0]  # image 0: sequence 1, slot 0; Q = 2 slots per sequence
    assert plan.empty_queries.tolist() == [[False, False], [False, True]]


# ----- token dropout -----------------------------------------------------------------------------


def test_shuffle_within_keeps_each_segment_in_place():
    segment = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2])
    perm = _shuffle_within(segment)
    assert sorted(perm.tolist()) == list(range(8))
    assert torch.equal(segment[perm], segment)
    orders = {tuple(_shuffle_within(segment)[4:].tolist()) for _ in range(30)}
    assert len(orders) > 3  # the order within a segment is random


def test_token_dropout_keeps_the_expected_tokens_of_each_image_before_the_projection():
    def rate(h, w):
        return 0.75 if h * w >= 512 else 0.5

    model = build(token_dropout_prob=rate).train()
    imgs = images()
    counts = [(h // 8) * (w // 8) for h, w in SIZES]
    torch.manual_seed(0)
    draws = torch.rand(len(SIZES)).tolist()
    expected = [kept_tokens(n, rate(h, w), u) for n, (h, w), u in zip(counts, SIZES, draws)]
    assert expected != counts
    torch.manual_seed(0)
    patches, plan = model.prepare(imgs, group_images=True, group_max_seq_len=None)
    assert list(plan.lengths) == expected
    assert int((plan.ids >= 0).sum()) == sum(expected)
    chosen = _shuffle_within(plan.image_of_token)[plan.keep]
    assert chosen.unique().numel() == sum(expected)
    assert torch.equal(plan.image_of_token[chosen], torch.arange(len(imgs)).repeat_interleave(torch.tensor(expected)))
    seen = []
    hook = model.patch_embedding.proj.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0]))
    torch.manual_seed(0)  # the same draws as above
    model(imgs, group_images=True)
    model.eval()
    model(imgs, group_images=True)
    hook.remove()
    assert seen == [sum(expected), sum(counts)]  # dropped tokens are never projected; none dropped in eval


def test_token_dropout_rejects_bad_rates():
    with pytest.raises(ValueError, match="received token_dropout_prob=1.0"):
        build(token_dropout_prob=1.0)
    with pytest.raises(ValueError, match="received 'half'"):
        build(token_dropout_prob="half")
    model = build(token_dropout_prob=lambda h, w: 1.5).train()
    with pytest.raises(ValueError, match=r"token_dropout_prob\(32, 32\) must return a probability in \[0, 1\); received 1.5"):
        model(images())


# ----- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch, kwargs, match", [
    ([torch.randn(3, 40, 32)], {}, r"up to image_size 32x32; received 40x32 at index 0"),
    ([torch.randn(3, 16, 16), torch.randn(3, 12, 16)], {}, r"multiples of the patch size 8x8; received 12x16 at index 1"),
    ([torch.randn(3, 32, 32)], dict(group_images=True, group_max_seq_len=8),
     r"group_max_seq_len=8 tokens is shorter than image 0 \(32x32 pixels, 16 tokens\)"),
    ([], {}, "received an empty list"),
    ([torch.randn(1, 16, 16)], {}, r"expects 3 channels, i.e. images of shape \(3, height, width\); received 1 channels"),
    ([torch.randn(2, 3, 16, 16)], {}, r"received a 4-D tensor of shape \(2, 3, 16, 16\) at index 0 \(pass a list"),
    (torch.randn(2, 3, 16, 16), {}, r"received a tensor of shape \(2, 3, 16, 16\) \(for a batch"),
    ([[torch.randn(3, 8, 8)], []], {}, "received an empty group at index 1"),
    ([torch.randint(0, 255, (3, 8, 8))], {}, "expects float images; received dtype torch.int64"),
])
def test_bad_inputs_name_expected_and_received(batch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build()(batch, **kwargs)


# ----- pickling and compilation ------------------------------------------------------------------


def test_pickles_and_deep_copies_with_token_dropout():
    model = build(token_dropout_prob=0.3)
    imgs = images()
    with torch.no_grad():
        expected = model(imgs)
        for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
            torch.testing.assert_close(clone(imgs), expected, atol=0, rtol=0)
            assert clone.token_dropout_prob == 0.3


@pytest.mark.slow
def test_compiles_with_no_graph_break():
    torch._dynamo.reset()
    model = build(depth=1)
    imgs = images()
    explained = torch._dynamo.explain(model)(imgs, group_images=True, group_max_seq_len=16)
    assert explained.graph_break_count <= 1, explained.break_reasons  # at most around the eager host-side plan
    torch._dynamo.reset()
    model.train().token_dropout_prob = 0.5
    patches, plan = model.prepare(imgs, group_images=True, group_max_seq_len=16)
    core = torch._dynamo.explain(model.forward_packed)(patches, plan)
    assert core.graph_count == 1 and core.graph_break_count == 0, core.break_reasons
    torch._dynamo.reset()


def test_quantised_navit_runs_close_to_float():
    model = build()
    imgs = images()
    quantised = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        torch.testing.assert_close(quantised(imgs), model(imgs), atol=0.1, rtol=0.1)


# ----- the nested-tensor variant -----------------------------------------------------------------


def test_nested_trains_with_its_defaults():
    torch.manual_seed(0)
    model = NaViTNested(**SMALL)
    assert model.training and model.token_dropout_prob is None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(images())
    assert out.shape == (len(SIZES), 5)
    torch.nn.functional.cross_entropy(out, torch.arange(len(SIZES)) % 5).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.pos_embedding.height.grad.abs().sum() > 0 and model.attn_pool.q_norm.weight.grad.abs().sum() > 0
    opt.step()


def test_nested_with_token_dropout_trains():
    torch.manual_seed(0)
    model = NaViTNested(**SMALL, token_dropout_prob=0.5)
    model(images()).sum().backward()
    assert torch.isfinite(model.head.weight.grad).all()


@torch.no_grad()
def test_nested_and_packed_share_weights_and_logits():
    packed = build()
    nested = NaViTNested(**SMALL).eval()
    nested.load_state_dict(packed.state_dict())
    imgs = images()
    torch.testing.assert_close(nested(imgs), packed(imgs, group_images=True), atol=1e-5, rtol=0)


def test_nested_names_its_limits():
    model = NaViTNested(**SMALL).eval()
    imgs = images()
    with pytest.raises(NotImplementedError, match="export a NaViT|export that"):
        torch.export.export(model, (imgs,))
    quantised = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    with pytest.raises(NotImplementedError, match="quantise a NaViT with the same weights instead"):
        quantised(imgs)
    with pytest.raises(ValueError, match="flat list"):
        model([imgs[:2], imgs[2:]])


@pytest.mark.parametrize("tokens,rate", [(4, 0.3), (16, 0.1), (196, 0.25), (49, 0.5), (3, 0.9)])
def test_kept_tokens_apply_the_nominal_rate_in_expectation(tokens, rate):
    gen = torch.Generator().manual_seed(0)
    draws = torch.rand(20000, generator=gen).tolist()
    kept = [kept_tokens(tokens, rate, u) for u in draws]
    assert set(kept) <= {math.floor(tokens * (1 - rate)), max_kept_tokens(tokens, rate)} | {1}
    if tokens * (1 - rate) >= 1:  # truncation, vit-pytorch's rule, would keep 2 of 4 at rate 0.3: rate 0.5
        assert abs(sum(kept) / len(kept) - tokens * (1 - rate)) < 0.02


def test_stochastic_rounding_keeps_the_nominal_share_in_expectation_and_repeats_under_a_seed():
    model = build(token_dropout_prob=0.3).train()
    assert model.token_dropout_rounding == model.config["token_dropout_rounding"] == "stochastic"  # default
    imgs = [torch.randn(3, 16, 16)] * 1000  # 4 tokens each: vit-pytorch's rule keeps 2, a share of 0.5
    lengths = []
    for seed in range(4):
        torch.manual_seed(seed)
        lengths += model.prepare(imgs)[1].lengths
    assert set(lengths) == {2, 3}
    assert abs(sum(lengths) / (4 * len(lengths)) - 0.7) < 0.02
    torch.manual_seed(3)
    assert list(model.prepare(imgs)[1].lengths) == lengths[-len(imgs):]  # torch's generator: seeding repeats


def test_floor_rounding_reproduces_vit_pytorchs_count():
    def rate(h, w):
        return 0.3 if h * w <= 256 else 0.45

    torch.manual_seed(0)
    src = VPNaViT(token_dropout_prob=rate, **SMALL).train()
    seen = []
    hook = src.to_patch_embedding.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    imgs = images(SIZES + [(16, 16), (8, 16)])
    for img in imgs:  # one image per call: the patch embedding sees exactly its kept tokens
        src([img])
    hook.remove()
    out = from_vit_pytorch(src).train()
    assert out.token_dropout_rounding == "floor"
    counts = [(img.shape[-2] // 8) * (img.shape[-1] // 8) for img in imgs]
    for _ in range(3):  # no randomness in the count
        assert list(out.prepare(imgs, group_images=True, group_max_seq_len=None)[1].lengths) == seen
    assert seen == [floor_kept_tokens(n, rate(*img.shape[-2:])) for n, img in zip(counts, imgs)]
    assert seen[len(SIZES)] == 2  # the 16x16 image: 4 tokens at rate 0.3 keep 2, a share of 0.5
    built = build(token_dropout_prob=rate, token_dropout_rounding="floor").train()
    assert list(built.prepare(imgs)[1].lengths) == seen


@pytest.mark.parametrize("bad", ["round", "Floor", None, 0])
def test_token_dropout_rounding_rejects_bad_values(bad):
    match = (r"token_dropout_rounding must be 'stochastic' \(.*\) or 'floor' \(.*\); received "
             + re.escape(repr(bad)))
    with pytest.raises(ValueError, match=match):
        build(token_dropout_prob=0.3, token_dropout_rounding=bad)
    with pytest.raises(ValueError, match=match):
        expected_kept_tokens(4, 0.3, bad)
    model = build(token_dropout_prob=0.3).train()
    model.token_dropout_rounding = bad  # set after construction: checked when it is used
    with pytest.raises(ValueError, match=match):
        model(images())


@pytest.mark.parametrize("tokens", [1, 3, 4, 16, 49, 196])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.5, 0.75, 0.9])
def test_expected_kept_tokens_is_the_exact_mean_of_each_rule(tokens, rate):
    x = tokens * (1 - rate)
    low, frac = math.floor(x), x - math.floor(x)  # stochastic: low + 1 with probability frac, else low
    exact = (1 - frac) * max(1, low) + frac * max(1, low + 1)
    assert expected_kept_tokens(tokens, rate) == pytest.approx(exact, abs=1e-12)
    assert expected_kept_tokens(tokens, rate, "floor") == floor_kept_tokens(tokens, rate) == max(1, int(x))
