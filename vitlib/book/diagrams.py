"""Diagrams of the mechanisms the chapters teach, drawn with matplotlib from the real objects
where there is one (a NaViT packing plan, a LeViT's stage maps), so a diagram never disagrees
with the code it explains.

Each function draws into new axes and returns the figure; the chapters show it.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patches as mpatches

__all__ = ["patches_to_tokens", "levit_stages", "crossvit_branches", "packing", "distillation", "data_parallel",
           "attention_tiling"]

TOKEN = "#6baed6"
CLS = "#fd8d3c"
ATTN = "#08519c"
CONV = "#8c6d31"
GREY = "#d9d9d9"


def _box(ax, x, y, w, h, text="", color=GREY, fontsize=8, **kw):
    ax.add_patch(mpatches.FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.05",
                                         facecolor=color, edgecolor="black", lw=0.8, **kw))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, x0, y0, x1, y1, color="black", text="", fontsize=7):
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="->", color=color, lw=1.0))
    if text:
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, text, ha="center", va="bottom", fontsize=fontsize)


def _canvas(width: float, height: float, xlim: float, ylim: float):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, xlim)
    ax.set_ylim(0, ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def patches_to_tokens(grid: int = 4):
    """A ViT from image to logits: the image cut into ``grid x grid`` patches, each flattened and
    projected to a token, a class token prepended, positions added, L blocks of attention and MLP,
    and the class token's head."""
    fig, ax = _canvas(10, 3.2, 20, 6.4)
    s = 3.2 / grid
    rng = np.random.default_rng(0)
    img = rng.random((grid, grid))
    for r in range(grid):
        for c in range(grid):
            ax.add_patch(mpatches.Rectangle((0.4 + c * s, 1.6 + (grid - 1 - r) * s), s, s,
                                            facecolor=plt.cm.Greys(0.25 + 0.5 * img[r, c]), edgecolor="white", lw=1.5))
    ax.text(2.0, 5.2, f"image: {grid}x{grid} patches\nof P x P pixels", ha="center", fontsize=8)
    _arrow(ax, 3.8, 3.2, 5.0, 3.2, text="flatten,\nproject")
    n = grid * grid
    y0 = 3.2 - (n + 1) * 0.17
    _box(ax, 5.2, y0 + n * 0.34, 1.0, 0.3, "cls", CLS, fontsize=6)
    for i in range(n):
        _box(ax, 5.2, y0 + (n - 1 - i) * 0.34, 1.0, 0.3, "", TOKEN)
    ax.text(5.7, y0 - 0.45, f"n = {n} + 1 tokens\nof width d", ha="center", va="top", fontsize=8)
    _arrow(ax, 6.5, 3.2, 7.7, 3.2, text="+ positions")
    _box(ax, 7.9, 1.3, 5.2, 3.8, "", "#f7f7f7")
    ax.text(10.5, 4.75, "L transformer blocks", ha="center", fontsize=8)
    _box(ax, 8.2, 2.7, 2.2, 1.6, "attention\nscores n x n\nper head", TOKEN)
    _box(ax, 10.7, 2.7, 2.1, 1.6, "MLP\nper token", "#fdae6b")
    _arrow(ax, 10.4, 3.5, 10.7, 3.5)
    ax.text(10.5, 1.75, "each with a residual connection", ha="center", fontsize=7)
    _arrow(ax, 13.1, 3.2, 14.3, 3.2, text="class\ntoken")
    _box(ax, 14.5, 2.7, 1.8, 1.0, "head", "#74c476")
    _arrow(ax, 16.3, 3.2, 17.5, 3.2)
    ax.text(18.5, 3.2, "logits", ha="center", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def levit_stages(model=None, image_size: int = 224):
    """LeViT: a stem of four stride-2 convolutions (the map shrinks 16 times), then stages of
    attention and MLP on a feature map, separated by shrinking attention whose queries come from
    every other position. Map sizes and widths are read from ``model`` (a vitlib LeViT; default:
    LeViT-128S built on the meta device)."""
    import torch

    if model is None:
        from ..models import presets

        with torch.device("meta"):
            model = presets.create("LeViT-128S", image_size=image_size)
    h = model.image_size[0] // 16
    parts = list(model.parts())
    dims = [stage.blocks[0].attn.to_q[0].in_channels for stage in model.backbone]
    fig, ax = _canvas(11, 3.4, 22, 6.8)
    _box(ax, 0.2, 2.2, 2.2, 2.2, f"image\n{model.image_size[0]} px", GREY)
    _arrow(ax, 2.4, 3.3, 3.2, 3.3)
    for i, w in enumerate((*model.stem_widths, dims[0])):
        _box(ax, 3.3 + i * 0.55, 2.0 + i * 0.1, 0.45, 2.6 - i * 0.2, "", CONV, alpha=0.5 + 0.12 * i)
    ax.text(4.3, 1.55, "stem: 4 conv 3x3,\nstride 2", ha="center", va="top", fontsize=7)
    ax.text(4.3, 5.1, "widths " + ", ".join(str(w) for w in (*model.stem_widths, dims[0])), ha="center", fontsize=7)
    x = 5.8
    size = h
    stage = 0
    for label, stage_mod, width in zip(parts[1:-1], model.backbone, dims):
        if label.startswith("shrink"):
            _arrow(ax, x, 3.3, x + 1.6, 3.3, color=ATTN, text="shrinking\nattention")
            ax.text(x + 0.8, 2.7, "queries at\nstride 2", ha="center", va="top", fontsize=6, color=ATTN)
            x += 1.8
            size = (size + 1) // 2
        else:
            side = 0.35 + 2.6 * size / h
            stage += 1
            _box(ax, x, 3.3 - side / 2, side, side, "", TOKEN)
            ax.text(x + side / 2, 3.3, f"{size}x{size}", ha="center", va="center", fontsize=7)
            ax.text(x + side / 2, 3.3 + side / 2 + 0.25, f"stage {stage}: {len(stage_mod.blocks)} blocks\n"
                    f"width {width}, {size * size} tokens", ha="center", va="bottom", fontsize=6.5)
            x += side + 0.3
    _arrow(ax, x, 3.3, x + 0.8, 3.3, text="mean")
    _box(ax, x + 0.9, 2.8, 1.6, 1.0, "head", "#74c476")
    ax.text(11, 0.4, "inside a stage every token attends to every token of that stage: "
            "(tokens)^2 scores per head", ha="center", fontsize=7.5, color=ATTN)
    fig.tight_layout()
    return fig


def crossvit_branches(sm_tokens: int = 16, lg_tokens: int = 4, model=None):
    """CrossViT: the image reaches two branches, small patches (many narrow tokens) and large
    patches (few wide tokens), each with a class token. In each of the model's multi-scale layers
    both branches run their own encoder (self-attention: every token attends to every token of its
    branch), then each class token attends to the other branch's patch tokens and to itself (one
    query: linear in tokens), and goes back to its branch; that is the only exchange. At the end
    each branch's class token is classified and the logits are summed.

    With ``model`` (a vitlib :class:`~vitlib.models.CrossViT`) the labels read its image sizes,
    patch sizes, widths, depths and token counts, and ``sm_tokens`` / ``lg_tokens`` are taken from
    it; the strips show at most 16 token boxes."""
    if model is not None:
        sm_tokens = model.sm_embedding.patch_embedding.num_patches
        lg_tokens = model.lg_embedding.patch_embedding.num_patches
    fig, ax = _canvas(11, 4.4, 22, 8.8)
    image = "image" if model is None else f"image\n{model.image_size[0]} x {model.image_size[1]} px"
    _box(ax, 0.2, 3.4, 2.0, 2.0, image, GREY)
    # as many boxes as tokens, up to 16 for the longer strip and in proportion for the other
    most = max(sm_tokens, lg_tokens)
    rows = {"sm": (6.3, sm_tokens, "small patches"), "lg": (1.7, lg_tokens, "large patches")}
    for branch, (y, n, label) in rows.items():
        if model is None:
            title, enc, resized = f"{label}: 1 + {n} tokens", "encoder", ""
        else:
            c = model.config
            (h, w), emb = getattr(model, f"{branch}_image_size"), getattr(model, f"{branch}_embedding")
            ph = emb.patch_embedding.patch_size[0]
            title = f"{label}: {ph} px, 1 + {n} tokens of width {c[f'{branch}_dim']}"
            enc = f"encoder: {c[f'{branch}_enc_depth']} block" + ("s" if c[f"{branch}_enc_depth"] > 1 else "")
            resized = "" if (h, w) == tuple(model.image_size) else f"{label}:\nresized to {h} x {w}"
        _arrow(ax, 2.2, 4.4, 3.2, y + 0.3)
        if resized:
            ax.text(1.2, 3.25 if branch == "lg" else 6.3, resized, fontsize=6, ha="center",
                    va="top" if branch == "lg" else "bottom")
        shown = n if most <= 16 else max(1, round(16 * n / most))
        width = 5.2 / 17 - 0.04
        _box(ax, 3.4, y, width, 0.6, "", CLS)
        for i in range(shown):
            _box(ax, 3.4 + (i + 1) * (width + 0.04), y, width, 0.6, "", TOKEN)
        end = 3.4 + (shown + 1) * (width + 0.04)
        if shown < n:
            ax.text(end + 0.05, y + 0.3, "...", fontsize=8, va="center")
            end += 0.45
        ax.text(3.4, y + 0.85, title, fontsize=7)
        _arrow(ax, end + 0.05, y + 0.3, 9.9, y + 0.3)
        _box(ax, 10.0, y - 0.15, 2.6, 0.9, f"{enc}\n(self-attention)", "#f7f7f7", fontsize=7)
        _arrow(ax, 12.6, y + 0.3, 13.8, y + 0.3)
        _box(ax, 13.9, y, 0.45, 0.6, "", CLS)
        _arrow(ax, 14.45, y + 0.3, 17.3, 4.4 + (0.3 if branch == "sm" else -0.3))
    depth = "L" if model is None else str(model.config["depth"])
    _box(ax, 9.7, 0.9, 6.1, 7.0, "", "none")
    ax.text(12.75, 8.1, f"x {depth} multi-scale layers", ha="center", fontsize=8)
    _arrow(ax, 14.0, 6.25, 14.0, 2.35, color=ATTN)  # the small class token visits the large branch
    _arrow(ax, 14.3, 2.35, 14.3, 6.25, color=ATTN)  # and the large one the small branch
    ax.text(14.55, 4.3, "each class token\nattends to the other\nbranch: 1 query x\n(1 + N) keys, linear in N",
            fontsize=7, color=ATTN, va="center")
    _box(ax, 17.4, 3.8, 3.2, 1.2, "each class token's\nhead; logits summed", "#74c476", fontsize=7)
    fig.tight_layout()
    return fig


def packing(plan, sizes=None, title: str = ""):
    """A NaViT packing plan (:class:`~vitlib.models.na_vit.PackPlan`): left, each sequence's slots
    coloured by image (grey: padding); right, the block-diagonal attention mask of each sequence
    (a token attends to its own image only). One colour per image, the same wherever its tokens
    are, with a legend naming the images (their ``sizes``, height x width, when given)."""
    groups = [list(g) for g in plan.groups]
    images = [i for g in groups for i in g]
    if len(images) <= 20:
        cmap = plt.get_cmap("tab10" if len(images) <= 10 else "tab20")
        palette = [cmap(k) for k in range(len(images))]
    else:  # more images than a qualitative map has colours: distinct samples of a continuous one
        palette = [tuple(c) for c in plt.get_cmap("turbo")(np.linspace(0.0, 1.0, len(images)))]
    colours = dict(zip(sorted(images), palette))
    seq_len = plan.ids.shape[1]
    fig, axes = plt.subplots(1, 1 + len(groups), figsize=(3.2 + 2.4 * len(groups), 2.8),
                             gridspec_kw={"width_ratios": [1.6] + [1] * len(groups)})
    slots = axes[0]
    for g, (ids, group) in enumerate(zip(plan.ids.tolist(), groups)):
        for s, local in enumerate(ids):
            colour = GREY if local < 0 else colours[group[local]]
            slots.add_patch(mpatches.Rectangle((s, len(groups) - 1 - g), 1, 0.8, facecolor=colour,
                                               edgecolor="white", lw=0.5))
    slots.set(xlim=(0, seq_len), ylim=(-0.2, len(groups)), xlabel="slot", title="sequences (rows) and their slots")
    slots.set_yticks([len(groups) - 1 - g + 0.4 for g in range(len(groups))], [f"seq {g}" for g in range(len(groups))])
    for g, (ax, ids, group) in enumerate(zip(axes[1:], plan.ids.tolist(), groups)):
        ids = np.array(ids)
        rgb = np.ones((seq_len, seq_len, 3))
        same = (ids[:, None] == ids[None, :])
        for local, img in enumerate(group):
            rgb[(ids[:, None] == local) & (ids[None, :] == local)] = colours[img][:3]
        rgb[same & (ids[:, None] < 0)] = mcolor(GREY)
        ax.imshow(rgb, interpolation="nearest")
        ax.set(title=f"mask of seq {g}", xlabel="key slot", ylabel="query slot" if g == 0 else "")
        ax.set_xticks([]), ax.set_yticks([])
    labels = [f"image {img}" + (f" ({sizes[img][0]}x{sizes[img][1]})" if sizes is not None else "")
              + f", {plan.lengths[img]} tokens" for img in sorted(images)]
    handles = [mpatches.Patch(color=colours[img], label=lab) for img, lab in zip(sorted(images), labels)]
    handles.append(mpatches.Patch(color=GREY, label="padding"))
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.12 + 0.05 * (len(handles) // 4), 1, 1))
    return fig


def distillation(student, *, temperature: float = 3.0, alpha: float = 0.5, hard: bool = False):
    """DeiT-style distillation of a :class:`~vitlib.models.DistillableViT` ``student``: its class
    token, patch tokens and distillation token (the counts read from the model) through the
    transformer; the class head learns the labels, the distillation head the frozen teacher's
    output (softened at ``temperature``, or its top class when ``hard``); ``alpha`` weighs the two."""
    n = student.patch_embedding.num_patches
    fig, ax = _canvas(10, 3.6, 20, 7.2)
    _box(ax, 0.2, 2.6, 2.0, 2.0, f"image\n{student.image_size[0]} px", GREY)
    _arrow(ax, 2.2, 3.6, 3.1, 3.6)
    shown = min(n, 8)
    _box(ax, 3.2, 3.3, 0.5, 0.6, "cls", CLS, fontsize=6)
    for i in range(shown):
        _box(ax, 3.75 + i * 0.42, 3.3, 0.38, 0.6, "", TOKEN)
    xd = 3.75 + shown * 0.42 + 0.05
    _box(ax, xd, 3.3, 0.55, 0.6, "dist", "#9e9ac8", fontsize=6)
    ax.text((3.2 + xd + 0.55) / 2, 4.2, f"1 + {n} patch tokens + 1 distillation token", ha="center", fontsize=7)
    _arrow(ax, xd + 0.6, 3.6, xd + 1.2, 3.6)
    x = xd + 1.3
    _box(ax, x, 2.7, 2.8, 1.8, f"{len(student.transformer.blocks)} transformer\nblocks: every token\n"
         "attends to every token", "#f7f7f7", fontsize=7)
    _arrow(ax, x + 2.8, 4.1, x + 3.7, 5.3, text="cls")
    _arrow(ax, x + 2.8, 3.1, x + 3.7, 1.9, text="dist")
    hx = x + 3.8
    _box(ax, hx, 4.9, 1.7, 0.8, "class head", "#74c476", fontsize=7)
    _box(ax, hx, 1.5, 1.7, 0.8, "distill head", "#9e9ac8", fontsize=7)
    lx = hx + 2.3
    _box(ax, lx, 4.9, 4.4, 0.8, f"(1 - {alpha:g}) x CE(labels)", GREY, fontsize=7)
    term = "CE(teacher's top class)" if hard else f"KL(teacher at T={temperature:g}) x T^2"
    _box(ax, lx, 1.5, 4.4, 0.8, f"{alpha:g} x {term}", GREY, fontsize=7)
    _arrow(ax, hx + 1.7, 5.3, lx, 5.3)
    _arrow(ax, hx + 1.7, 1.9, lx, 1.9)
    _box(ax, lx + 0.8, 0.1, 2.8, 0.8, "teacher (CNN): frozen,\neval mode", CONV, fontsize=6.5, alpha=0.6)
    _arrow(ax, lx + 2.2, 0.9, lx + 2.2, 1.5)
    ax.text(hx + 0.85, 3.6, "inference: the mean\nof the two heads", ha="center", va="center", fontsize=7)
    fig.tight_layout()
    return fig


def data_parallel(processes: int = 2):
    """The mechanism of data-parallel training, drawn: one global batch cut into a slice per
    process, a full replica of the model in each, the gradients averaged by an all-reduce, and
    the same optimiser step everywhere, so the replicas stay equal (the ``process`` lanes)."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(9, 4.2))
    colours = ["#08519c", "#fd8d3c", "#74c476", "#9e9ac8", "#e377c2", "#8c6d31", "#17becf", "#bcbd22"]
    width = 10.0
    lane = width / processes

    def box(x, y, w, h, text, colour, alpha=0.18, size=8):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    fc=colour, ec=colour, alpha=alpha, lw=1.2))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)

    def arrow(x, y0, y1):
        ax.add_patch(FancyArrowPatch((x, y0), (x, y1), arrowstyle="-|>", mutation_scale=10, lw=1, color="#444"))

    ax.text(width / 2, 6.55, "one global batch of B images (the same order on every process: seed, epoch)",
            ha="center", fontsize=8)
    for r in range(processes):
        c = colours[r % len(colours)]
        x0, mid = r * lane, r * lane + lane / 2
        ax.add_patch(FancyBboxPatch((x0 + 0.05, 5.9), lane - 0.1, 0.45, boxstyle="square,pad=0", fc=c, alpha=0.7))
        ax.text(mid, 6.12, f"slice {r}: B/{processes}", ha="center", va="center", fontsize=8, color="white")
        arrow(mid, 5.85, 5.3)
        box(x0 + 0.15, 3.95, lane - 0.3, 1.3, f"process {r}\nreplica of the model\nforward, loss, backward", c)
        arrow(mid, 3.9, 3.35)
        ax.text(mid, 3.15, f"gradients g{r}", ha="center", fontsize=8)
        arrow(mid, 2.95, 2.45)
        arrow(mid, 1.55, 1.05)
        box(x0 + 0.15, 0.2, lane - 0.3, 0.8, "optimiser step\n(same weights after)", c, size=8)
    terms = " + ".join(f"g{r}" for r in range(processes)) if processes <= 3 else f"g0 + ... + g{processes - 1}"
    box(0.15, 1.6, width - 0.3, 0.8, f"all-reduce: every process receives the mean ({terms}) / {processes}, "
        "overlapped with the backward pass", "#444444", alpha=0.12)
    ax.set_xlim(-0.1, width + 0.1)
    ax.set_ylim(0, 6.8)
    ax.axis("off")
    fig.tight_layout()
    return fig


def attention_tiling(tokens: int = 8, block: int = 2, tile: int = 1):
    """Attention's score matrix for one head, ``tokens x tokens``: the plain path stores it whole;
    a tiled kernel (FlashAttention) holds one ``block``-key tile of scores at a time (tile number
    ``tile`` drawn dark) and carries, per query, a running maximum, a running sum and a running
    output, so the matrix never exists in memory."""
    if not 1 <= block <= tokens or not 0 <= tile < -(-tokens // block):
        raise ValueError(f"expected 1 <= block <= tokens and a tile among the {-(-tokens // block)} tiles; "
                         f"received tokens {tokens}, block {block}, tile {tile}")
    fig, ax = _canvas(9, 3.6, 19, 7.6)
    s = 5.2 / tokens

    def grid(x0, colour_of):
        for r in range(tokens):
            for c in range(tokens):
                face, edge = colour_of(c)
                ax.add_patch(mpatches.Rectangle((x0 + c * s, 1.2 + (tokens - 1 - r) * s), s, s, facecolor=face,
                                                edgecolor=edge, lw=0.6, ls="-" if edge == "white" else ":"))

    grid(0.8, lambda c: (ATTN, "white"))
    ax.text(3.4, 6.8, "plain: all n x n scores stored,\nthen softmax, then times V", ha="center", fontsize=8)
    ax.text(3.4, 0.5, f"{tokens} x {tokens} scores in memory", ha="center", fontsize=8)
    first, last = tile * block, min(tokens, (tile + 1) * block)
    grid(9.0, lambda c: (ATTN, "white") if first <= c < last else ("white", "grey"))
    ax.text(11.6, 6.8, f"tiled: {block} keys at a time;\ndotted scores are never stored", ha="center",
            fontsize=8)
    ax.text(11.6, 0.5, f"{tokens} x {block} scores in memory", ha="center", fontsize=8)
    _arrow(ax, 14.4, 3.8, 15.3, 3.8)
    _box(ax, 15.4, 2.2, 3.4, 3.2, "per query:\nrunning max m\nrunning sum l\nrunning output o\n\n"
         "a new tile rescales\nl and o by exp(m - m')", "#f7f7f7", fontsize=7)
    fig.tight_layout()
    return fig


def mcolor(name: str):
    from matplotlib.colors import to_rgb

    return to_rgb(name)
