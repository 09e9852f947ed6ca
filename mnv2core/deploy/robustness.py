"""Common corruptions: Gaussian blur and additive Gaussian noise, on [0, 1] image batches."""
from __future__ import annotations

import math
from pathlib import Path

import torch


def blur_kernel_size(sigma: float) -> int:
    """An odd kernel covering +-3 sigma (at least 3)."""
    return max(3, 2 * math.ceil(3 * sigma) + 1)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return images
    size = blur_kernel_size(sigma)
    from torchvision.transforms.v2 import functional as TF  # imported when used (1.5 s)
    return TF.gaussian_blur(images, kernel_size=[size, size], sigma=[sigma, sigma])


def gaussian_noise(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (images + sigma * noise).clamp(0, 1)


def plot_robustness(clean: float, blur_sigmas: list[float], blur_accuracy: list[float],
                    noise_sigmas: list[float], noise_accuracy: list[float], path: Path, title: str) -> Path:
    """Accuracy against corruption strength, blur and noise side by side (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for axis, name, sigmas, accuracy in ((axes[0], "Gaussian blur", blur_sigmas, blur_accuracy),
                                         (axes[1], "Gaussian noise", noise_sigmas, noise_accuracy)):
        axis.plot([0, *sigmas], [clean, *accuracy], marker="o")
        axis.set(title=name, xlabel="sigma", ylim=(0, 1.02))
    axes[0].set_ylabel("test accuracy")
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_robustness_curves(found: list[tuple[str, dict]], path: Path, dataset: str) -> Path | None:
    """Every model's blur and noise curves in one figure: ``found`` = (label, its robustness
    metrics)."""
    found = [(label, m) for label, m in found if "blur" in m]
    if not found:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), sharey=True)
    for panel, kind in zip(axes, ("blur", "noise"), strict=True):
        for label, m in found:
            sigmas = [0.0] + [float(key.split("_")[1]) for key in m[kind]]
            panel.plot(sigmas, [m["accuracy"], *m[kind].values()], marker="o", label=label)
        panel.set(xlabel=f"Gaussian {kind} sigma", title=f"{dataset}: {kind}")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    return path
