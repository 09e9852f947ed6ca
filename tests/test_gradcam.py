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


class FixedLogits(nn.Module):
    """Each image's logits are written in its first pixels: the test decides every confidence."""

    def forward(self, x):
        return x[:, 0, 0, :3] * 10


def test_the_gallery_shows_the_least_confident_right_then_the_most_confident_wrong_predictions():
    from mnv2core.techniques.gradcam import gallery
    images = torch.zeros(6, 3, 4, 4)
    #                 class 0 sure, 0 unsure,      1 sure,      1 unsure,     2 sure,      2 unsure
    rows = torch.tensor([[0.9, 0, 0], [0.1, 0, 0.05], [0, 0.8, 0], [0.04, 0.1, 0], [0, 0, 0.7], [0, 0.1, 0.12]])
    images[:, 0, 0, :3] = rows
    labels = torch.tensor([0, 0, 1, 2, 1, 2])  # images 3 and 4 are wrong: 4 surely, 3 barely
    predicted = rows.argmax(1)
    shown, confidence = gallery(FixedLogits(), images, labels, predicted, count=2)
    assert shown.tolist() == [5, 1, 4, 3]  # right, least confident first; then wrong, most confident first
    assert confidence[4] > confidence[3] and confidence[5] < confidence[1] < confidence[0]


def test_feature_maps_come_from_early_middle_and_last_conv_layers_and_show_where_they_respond():
    from mnv2core.explain.feature_maps import mean_maps, pick_layers
    from mnv2core.explain.gradcam import feature_map_layers
    assert pick_layers(list("abcdefg")) == ["a", "d", "g"] and pick_layers(["a", "b"]) == ["a", "b"]
    features = QuadrantFeatures((slice(0, 8), slice(0, 8)))
    features.conv = nn.Conv2d(4, 8, 3, padding=1)
    model = nn.Sequential()
    model.add_module("net", nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), features,
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)))
    layers = feature_map_layers(model, torch.rand(1, 3, 16, 16))
    assert layers == ["net.0", "net.1", "net.2.conv", "net.2"]  # unpooled 4D maps, in the order they finish
    assert pick_layers(layers) == ["net.0", "net.2.conv", "net.2"]
    maps = mean_maps(model, torch.rand(3, 3, 16, 16), pick_layers(layers))
    assert maps["net.2"].shape == (3, 16, 16) and maps["net.2"][:, 8:, :].abs().sum() == 0  # nothing outside
    assert maps["net.2"][:, :8, :8].abs().sum() > 0 and maps["net.0"][:, 8:, :].abs().sum() > 0


def test_the_feature_map_figure_is_a_png(tmp_path):
    from mnv2core.explain.feature_maps import plot_feature_maps
    path = plot_feature_maps(torch.rand(2, 3, 8, 8), {"a": torch.rand(2, 8, 8), "b": torch.rand(2, 2, 2)},
                             tmp_path / "f.png", "maps")
    assert path.read_bytes()[:4] == b"\x89PNG"
