"""Grad-CAM: weight a conv layer's activation maps by the spatial mean of the target class
score's gradients, sum, ReLU, upsample to the input."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


@torch.no_grad()
def feature_map_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Of every module below the top, in the order they finish on ``example``, those whose
    output is a 4D map that no pooling layer made: the model's conv feature maps, early to late."""
    device = next(model.parameters()).device
    example = torch.rand(1, 3, 64, 64, device=device) if example is None else example[:1]
    finished, pooled = [], set()

    def note(name):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor):
                finished.append((name, output))
                if isinstance(module, POOLS):
                    pooled.add(id(output))
        return hook

    handles = [m.register_forward_hook(note(name)) for name, m in model.named_modules() if name.count(".") >= 1]
    was_training = model.training
    try:
        model.eval()(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    names = [name for name, output in finished if output.dim() == 4 and id(output) not in pooled]
    return list(reversed(dict.fromkeys(reversed(names))))  # a module run twice counts where it last ran


def default_target_layer(model: nn.Module, example: torch.Tensor | None = None) -> str:
    """The module that outputs the last conv feature map (``net.features`` for MobileNetV2,
    ``net.layer4`` for ResNets, ``net.bn2`` for timm's EfficientNets)."""
    maps = feature_map_layers(model, example)
    if not maps:
        raise ConfigError("no conv feature map found for Grad-CAM; name a layer (deployment.gradcam layer)")
    return maps[-1]


def grad_cam(model: nn.Module, images: torch.Tensor, layer: str | None = None,
             classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Heatmaps (N, H, W) in [0, 1] for ``classes`` (default: the predicted ones), the
    classes used, and the target layer's feature-map size. Hooks are removed on return and
    the model's parameters are left without gradients."""
    modules = dict(model.named_modules())
    layer = layer or default_target_layer(model, images)
    if layer not in modules:
        raise ConfigError(f"Grad-CAM layer {layer!r} is not a module of the model")
    captured: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):
        captured["maps"] = output

    handle = modules[layer].register_forward_hook(keep)
    try:
        model.eval()
        with torch.enable_grad():
            logits = model(images.detach())
            classes = logits.argmax(1) if classes is None else classes
            score = logits.gather(1, classes.view(-1, 1)).sum()
            # gradients of the maps only: the model's parameters get no .grad
            (map_gradients,) = torch.autograd.grad(score, captured["maps"])
    finally:
        handle.remove()
    maps = captured["maps"]
    weights = map_gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * maps).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return cam / peak, classes.detach(), tuple(maps.shape[-2:])


def plot_overlays(images: torch.Tensor, heatmaps: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor,
                  path, title: str, class_names: tuple[str, ...] | None = None,
                  confidences: torch.Tensor | None = None):
    """A grid of heatmap overlays, one column per image, captioned with the true and the
    predicted class (by name when given), marked correct or misclassified, and with the
    prediction's confidence when given."""
    def name(index) -> str:
        return class_names[int(index)] if class_names else str(int(index))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(images)
    figure, axes = plt.subplots(2, count, figsize=(1.6 * count, 3.6), squeeze=False)
    for column in range(count):
        picture = images[column].permute(1, 2, 0).cpu().numpy()
        axes[0, column].imshow(picture)
        axes[1, column].imshow(picture)
        axes[1, column].imshow(heatmaps[column].cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        sure = "" if confidences is None else f" {float(confidences[column]):.2f}"
        if predictions[column] == labels[column]:
            caption = f"{name(labels[column])}\n(correct{sure})"
        else:
            caption = f"{name(labels[column])}\nread as {name(predictions[column])}{sure}"
        axes[0, column].set_title(caption, fontsize=7, color="black" if predictions[column] == labels[column] else "red")
        for row in range(2):
            axes[row, column].axis("off")
    figure.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    return path
