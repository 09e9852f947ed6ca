import pytest
import torch

from mnv2core.datasets.digits import CLASS_NAMES, generate_digits


@pytest.mark.parametrize("size", [28, 32])
def test_digits_are_uint8_grayscale_in_three_channels(size):
    data = generate_digits(50, size=size, seed=0)
    assert data.images.shape == (50, 3, size, size) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64
    assert torch.equal(data.images[:, 0], data.images[:, 1]) and torch.equal(data.images[:, 0], data.images[:, 2])
    assert CLASS_NAMES == tuple("0123456789")


def test_digits_are_deterministic_per_seed():
    a, b = generate_digits(200, seed=5), generate_digits(200, seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, generate_digits(200, seed=6).images)


def test_digits_labels_are_balanced():
    counts = torch.bincount(generate_digits(1003, seed=2).labels, minlength=10)
    assert counts.sum() == 1003 and (counts - 100.3).abs().max() <= 1


def test_digits_are_light_strokes_on_dark_background():
    images = generate_digits(300, seed=3).images[:, 0]
    assert images.float().median() < 30
    assert (images.flatten(1).amax(1) > 128).all()
    assert ((images > 128).flatten(1).float().mean(1) > 0.015).all()  # a digit, not a dot


def test_digits_learnable_but_not_trivial_by_class_centroids():
    train, test = generate_digits(2000, seed=0), generate_digits(1000, seed=1)
    train_x, test_x = train.images[:, 0].flatten(1).float(), test.images[:, 0].flatten(1).float()
    centroids = torch.stack([train_x[train.labels == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(test_x, centroids).argmin(1) == test.labels).float().mean().item()
    assert 0.6 < accuracy < 0.98
