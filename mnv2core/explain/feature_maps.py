"""Feature maps: what a few of a model's conv layers (early, middle, last) respond to on fixed
test images, as each layer's mean activation over its channels."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def pick_layers(layers: list[str], count: int = 3) -> list[str]:
    """``count`` layers spread evenly from the first to the last (all of them if fewer)."""
    if len(layers) <= count:
        return list(layers)
    return [layers[round(i * (len(layers) - 1) / (count - 1))] for i in range(count)]


@torch.no_grad()
def mean_maps(model: nn.Module, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """layer -> (N, H, W): each image's activation map at that layer, averaged over its channels."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, output):
            captured[name] = output.float().mean(1)  # the last call wins, as for the layer picked
        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in layers]
    was_training = model.training
    try:
        model.eval()(images)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {name: captured[name].cpu() for name in layers}


def plot_feature_maps(images: torch.Tensor, maps: dict[str, torch.Tensor], path: Path, title: str) -> Path:
    """One row per image: the image, then its mean map at each layer (with the map's size)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns = len(images), 1 + len(maps)
    figure, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.7 * rows + 0.5), squeeze=False)
    for row in range(rows):
        axes[row, 0].imshow(images[row].permute(1, 2, 0).cpu().numpy())
        for column, (name, stack) in enumerate(maps.items(), start=1):
            axes[row, column].imshow(stack[row].numpy(), cmap="viridis")
            if row == 0:
                axes[row, column].set_title(f"{name}\n{stack.shape[-2]}x{stack.shape[-1]}", fontsize=6)
        for column in range(columns):
            axes[row, column].axis("off")
    figure.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    return path
