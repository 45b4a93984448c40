"""The mechanism diagrams draw from the real objects they explain."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from vitlib import NaViT, diagrams  # noqa: E402
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


def test_distillation_diagram_reads_the_student():
    from vitlib import DistillableViT

    student = DistillableViT(image_size=16, patch_size=4, num_classes=10, dim=32, depth=3, heads=2, mlp_dim=32)
    fig = diagrams.distillation(student, temperature=4, alpha=0.25)
    text = _texts(fig)
    assert "1 + 16 patch tokens" in text and "3 transformer" in text and "KL(teacher at T=4)" in text
    assert "0.25 x" in text and "(1 - 0.25)" in text
    assert "CE(teacher's top class)" in _texts(diagrams.distillation(student, hard=True))
    plt.close("all")
