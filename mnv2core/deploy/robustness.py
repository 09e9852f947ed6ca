"""Common corruptions: Gaussian blur and additive Gaussian noise, on [0, 1] image batches."""
from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as TF


def blur_kernel_size(sigma: float) -> int:
    """An odd kernel covering +-3 sigma (at least 3)."""
    return max(3, 2 * math.ceil(3 * sigma) + 1)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return images
    size = blur_kernel_size(sigma)
    return TF.gaussian_blur(images, kernel_size=[size, size], sigma=[sigma, sigma])


def gaussian_noise(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (images + sigma * noise).clamp(0, 1)
