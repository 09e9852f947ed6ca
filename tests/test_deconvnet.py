"""DeconvNet and guided backpropagation: the ReLU rules, the projection through max-pooling's
switches, and reconstructions of edge detectors lying on the input's edges more than a random
network's do."""
import pytest
import torch
from torch import nn
from torchvision.models import vgg16

from mnv2core.explain.deconvnet import backward_rule, edge_magnitude, edge_share, flat_share, reconstruct


def projected(rule, x, upstream):
    relu = nn.ReLU(inplace=True)
    model = nn.Sequential(relu)
    x = x.clone().requires_grad_(True)
    with backward_rule(model, rule) if rule else torch.enable_grad():
        (gradient,) = torch.autograd.grad(model(x * 1), x, upstream)
    assert relu.inplace and "forward" not in vars(relu)  # as it was
    return gradient


def test_each_rule_passes_what_the_paper_says_through_a_relu():
    x = torch.tensor([1.0, -1.0, 2.0, -2.0])
    upstream = torch.tensor([0.5, 0.5, -0.5, -0.5])
    assert projected(None, x, upstream).tolist() == [0.5, 0.0, -0.5, -0.0]  # plain gradient: the forward mask
    assert projected("deconvnet", x, upstream).tolist() == [0.5, 0.5, 0.0, 0.0]  # relu of the signal, no mask
    assert projected("guided", x, upstream).tolist() == [0.5, 0.0, 0.0, 0.0]  # both
    with pytest.raises(ValueError, match="rule 'saliency'"):
        with backward_rule(nn.ReLU(), "saliency"):
            pass


def test_a_rectifier_chosen_as_the_layer_passes_the_rule_too():
    """A ReLU6 layer's strongest units sit at 6, where its own gradient is zero: DeconvNet
    still projects them (the rule, not the mask), guided backpropagation does not."""
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU6(inplace=True))
    nn.init.constant_(model[0].weight, 0.1)
    images = torch.rand(2, 3, 8, 8) * 10  # a 3 x 3 x 3 patch sums to about 13: saturated
    deconvnet = reconstruct(model, images, "2", count=2)
    assert all(item.activation == 6.0 for item in deconvnet)  # the peaks are saturated
    assert all(item.pixels.abs().sum() > 0 for item in deconvnet)
    assert all(item.pixels.abs().sum() == 0 for item in reconstruct(model, images, "2", count=2, rule="guided"))
    assert "forward" not in vars(model[2]) and model[2].inplace  # the model as it was


def pooled():
    grey = nn.Conv2d(3, 1, 1, bias=False)
    nn.init.constant_(grey.weight, 1 / 3)
    model = nn.Sequential()
    model.add_module("net", nn.Sequential(grey, nn.ReLU(), nn.MaxPool2d(2)))
    return model


def test_a_pooled_units_reconstruction_goes_through_the_max_pool_switch_to_one_pixel():
    images = torch.zeros(2, 3, 8, 8)
    images[1, :, 5, 6] = 1.0  # the strongest activation: image 1, pool cell (2, 3), switch at pixel (5, 6)
    images[0, :, 0, 0] = 0.5
    (found,) = reconstruct(pooled(), images, "net.2", count=2)  # one channel: one reconstruction
    assert (found.image, found.channel, found.position) == (1, 0, (2, 3)) and found.activation == pytest.approx(1.0)
    assert found.box == (5, 6, 6, 7) and found.pixels.abs().sum() == found.pixels[:, 5, 6].abs().sum() > 0


def edge_images():
    """Bright squares and disks on a dark ground: edges only at their outlines."""
    generator = torch.Generator().manual_seed(0)
    images = torch.full((8, 3, 32, 32), 0.1)
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    for index in range(8):
        for _ in range(2):
            y, x = torch.randint(8, 24, (2,), generator=generator).tolist()
            radius = int(torch.randint(4, 8, (1,), generator=generator))
            shape = ((rows - y).abs() <= radius) & ((cols - x).abs() <= radius) if index % 2 else \
                (rows - y) ** 2 + (cols - x) ** 2 <= radius ** 2
            images[index][:, shape] = (torch.rand(3, generator=generator) * 0.6 + 0.4).view(3, 1)
    return images


def test_first_layer_edge_detectors_reconstruct_onto_the_inputs_edges_more_than_random_filters():
    """VGG16 (max-pooling), its first layer's filters set to oriented Sobel kernels, against the
    same network at random init: margin 0.05 of the reconstructions' magnitude on edge pixels."""
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    bank = [sobel, sobel.T, -sobel, -sobel.T]
    images = edge_images()
    assert (edge_magnitude(images) > 0.25 * edge_magnitude(images).amax()).float().mean() < 0.3  # mostly flat

    def share(edge_filters: bool) -> float:
        torch.manual_seed(0)
        model = nn.Sequential()
        model.add_module("net", vgg16(num_classes=10))
        if edge_filters:
            first = model.net.features[0]
            with torch.no_grad():
                for channel in range(first.out_channels):
                    first.weight[channel] = bank[channel % 4].expand(3, 3, 3) * (1 + channel / 64)
                first.bias.zero_()
        found = reconstruct(model, images, "net.features.1", count=8)
        return sum(edge_share(item, images) for item in found) / len(found)

    assert share(True) > share(False) + 0.05


def test_flat_share_is_0_for_edge_detectors_1_for_flat_filters_and_about_a_ninth_for_random_ones():
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])

    def first_conv(weight: torch.Tensor) -> nn.Module:
        conv = nn.Conv2d(3, weight.shape[0], 3)
        with torch.no_grad():
            conv.weight.copy_(weight)
        return nn.Sequential(conv, nn.ReLU(), nn.Conv2d(weight.shape[0], 4, 1))

    assert flat_share(first_conv(torch.stack([sobel, sobel.T]).unsqueeze(1).expand(2, 3, 3, 3))) == 0.0
    assert flat_share(first_conv(torch.rand(8, 3, 1, 1).expand(8, 3, 3, 3))) == pytest.approx(1.0)
    torch.manual_seed(0)
    assert 0.08 < flat_share(first_conv(torch.randn(256, 3, 3, 3))) < 0.14
    assert flat_share(nn.Sequential(nn.Conv2d(3, 8, 1))) is None and flat_share(nn.Linear(3, 2)) is None
