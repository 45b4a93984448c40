"""The mechanism diagrams draw from the real objects they explain."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from vitlib import NaViT  # noqa: E402
from vitlib.book import diagrams  # noqa: E402
from vitlib.models import presets  # noqa: E402


def _texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_static_diagrams_draw():
    for fig in (diagrams.patches_to_tokens(4), diagrams.crossvit_branches(9, 4)):
        assert fig.axes and _texts(fig)
        plt.close(fig)


def test_levit_diagram_reads_the_model():
    with torch.device("meta"):
        model = presets.create("LeViT-128S", image_size=128)
    fig = diagrams.levit_stages(model)
    text = _texts(fig)
    assert "8x8" in text and "4x4" in text and "2x2" in text  # 128 / 16, then halved twice
    assert "widths 16, 32, 64, 128" in text  # the paper's stem: D/8, D/4, D/2, D
    plt.close(fig)


def test_packing_diagram_colours_images_not_slots():
    model = NaViT(image_size=32, patch_size=8, num_classes=3, dim=16, depth=1, heads=1, dim_head=8, mlp_dim=16)
    sizes = [(32, 32), (16, 16), (8, 16)]
    _, plan = model.prepare([torch.randn(3, h, w) for h, w in sizes], group_images=True, group_max_seq_len=16)
    fig = diagrams.packing(plan, sizes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["image 0 (32x32), 16 tokens", "image 1 (16x16), 4 tokens", "image 2 (8x16), 2 tokens", "padding"]
    assert len(fig.axes) == 1 + len(plan.groups)
    plt.close(fig)


def _slot_colours(fig, plan):
    """Image (or -1 for padding) -> the set of facecolours of its slots in the left panel."""
    rows = len(plan.groups)
    found = {}
    for rect in fig.axes[0].patches:
        x, y = rect.get_xy()
        g, local = rows - 1 - round(y), int(plan.ids[rows - 1 - round(y), round(x)])
        img = -1 if local < 0 else plan.groups[g][local]
        found.setdefault(img, set()).add(tuple(round(c, 6) for c in rect.get_facecolor()))
    return found


@pytest.mark.parametrize("sizes, max_len", [([(32, 32), (16, 16), (8, 16), (16, 32), (8, 8)], 16),
                                            ([(8, 8), (8, 16)] * 12, 8)])  # 24 images: more than tab20
def test_packing_diagram_gives_each_image_one_colour_of_its_own(sizes, max_len):
    model = NaViT(image_size=32, patch_size=8, num_classes=3, dim=16, depth=1, heads=1, dim_head=8,
                  mlp_dim=16)
    imgs = [torch.randn(3, h, w) for h, w in sizes]
    _, plan = model.prepare(imgs, group_images=True, group_max_seq_len=max_len)
    fig = diagrams.packing(plan, sizes)
    found = _slot_colours(fig, plan)
    assert set(found) - {-1} == set(range(len(sizes)))  # every image has slots
    assert all(len(c) == 1 for c in found.values())  # one colour per image, wherever its tokens are
    colours = {img: next(iter(c)) for img, c in found.items()}
    assert len(set(colours.values())) == len(colours)  # distinct: one-to-one with images (and padding)
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[-1] == "padding" and len(labels) == len(sizes) + 1
    assert labels[:-1] == [f"image {i} ({h}x{w}), {plan.lengths[i]} tokens" for i, (h, w) in enumerate(sizes)]
    for text, handle in zip(labels, legend.legend_handles):  # the legend names each colour's image
        want = to_rgba(diagrams.GREY) if text == "padding" else colours[int(text.split()[1])]
        assert tuple(round(c, 6) for c in handle.get_facecolor()) == tuple(round(c, 6) for c in want)
    for g, (ax, group) in enumerate(zip(fig.axes[1:], plan.groups)):  # each mask block is its image's colour
        rgb, ids = ax.images[0].get_array(), plan.ids[g].tolist()
        for s, local in enumerate(ids):
            if local >= 0:
                assert tuple(round(float(c), 6) for c in rgb[s, s]) == colours[group[local]][:3]
    plt.close(fig)


def test_distillation_diagram_reads_the_student():
    from vitlib import DistillableViT

    student = DistillableViT(image_size=16, patch_size=4, num_classes=10, dim=32, depth=3, heads=2, mlp_dim=32)
    fig = diagrams.distillation(student, temperature=4, alpha=0.25)
    text = _texts(fig)
    assert "1 + 16 patch tokens" in text and "3 transformer" in text and "KL(teacher at T=4)" in text
    assert "0.25 x" in text and "(1 - 0.25)" in text
    assert "CE(teacher's top class)" in _texts(diagrams.distillation(student, hard=True))
    plt.close("all")
