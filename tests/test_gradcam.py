import pytest
import torch
from torch import nn

from mnv2core.explain.faithfulness import concentration, deletion_insertion_auc
from mnv2core.explain.gradcam import default_target_layer, grad_cam
from mnv2core.models import build_model


class QuadrantFeatures(nn.Module):
    """Conv features that exist only in one quadrant: the class can depend on nothing else."""

    def __init__(self, quadrant: tuple[slice, slice]):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.quadrant = quadrant

    def forward(self, x):
        mask = torch.zeros_like(x[:, :1])
        mask[..., self.quadrant[0], self.quadrant[1]] = 1
        return torch.relu(self.conv(x)) * mask


def quadrant_model(quadrant):
    torch.manual_seed(0)
    return nn.Sequential(QuadrantFeatures(quadrant), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


@pytest.mark.parametrize("rows, cols", [(slice(0, 8), slice(0, 8)), (slice(8, 16), slice(8, 16))])
def test_heatmap_mass_falls_in_the_quadrant_the_class_depends_on(rows, cols):
    model = quadrant_model((rows, cols))
    images = torch.rand(6, 3, 16, 16)
    heatmaps, classes, size = grad_cam(model, images, layer="0")
    assert heatmaps.shape == (6, 16, 16) and size == (16, 16) and classes.shape == (6,)
    inside = heatmaps[:, rows, cols].sum((1, 2))
    assert (inside / heatmaps.sum((1, 2))).min() > 0.9
    assert not model[0]._forward_hooks  # removed after use


def test_mobilenet_default_layer_and_its_1x1_map_at_32px():
    model = build_model("mobilenet_v2", 10)
    assert default_target_layer(model) == "net.features"  # the output of its last conv block, features.18
    heatmaps, _, size = grad_cam(model, torch.rand(2, 3, 32, 32))
    assert size == (1, 1) and heatmaps.shape == (2, 32, 32)
    _, _, size96 = grad_cam(model, torch.rand(2, 3, 96, 96))
    assert size96 == (3, 3)
    assert all(not m._forward_hooks for m in model.modules())


def test_concentration_of_uniform_and_one_hot_maps():
    uniform = torch.ones(1, 10, 10)
    one_hot = torch.zeros(1, 10, 10)
    one_hot[0, 3, 4] = 1
    share, entropy = concentration(torch.cat([uniform, one_hot]))
    assert share.tolist() == pytest.approx([0.1, 1.0])
    assert entropy.tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_deleting_the_salient_quadrant_hurts_more_than_deleting_the_rest():
    quadrant = (slice(0, 8), slice(0, 8))
    model = quadrant_model(quadrant)
    images = torch.rand(8, 3, 16, 16)
    heatmaps, classes, _ = grad_cam(model, images, layer="0")
    deletion, insertion = deletion_insertion_auc(model, images, heatmaps, classes)
    inverted_deletion, _ = deletion_insertion_auc(model, images, 1 - heatmaps, classes)
    assert deletion.mean() < inverted_deletion.mean()
    assert ((0 <= deletion) & (deletion <= 1) & (0 <= insertion) & (insertion <= 1)).all()


def test_grad_cam_leaves_the_model_as_it_found_it():
    model = build_model("mobilenet_v2", 10).to(memory_format=torch.channels_last).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    heatmaps, _, _ = grad_cam(model, torch.rand(4, 3, 64, 64))
    assert heatmaps.shape == (4, 64, 64) and torch.isfinite(heatmaps).all()
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training
