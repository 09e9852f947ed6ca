"""PNG plots of the companion studies: training curves and separation-index curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)


def plot_training_curves(histories: dict[str, list[dict]], path: Path, title: str) -> Path:
    """Training loss and validation accuracy per epoch, one line per training."""
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        loss_axis.plot(epochs, [h["train_loss"] for h in history], marker=".", label=name)
        accuracy_axis.plot(epochs, [h["val_accuracy"] for h in history], marker=".", label=name)
    loss_axis.set(xlabel="epoch", ylabel="training loss", title=title)
    accuracy_axis.set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1))
    accuracy_axis.legend(fontsize=7)
    return _save(figure, path)


def plot_layer_si(train: list[float], test: list[float], kept: int, path: Path, title: str) -> Path:
    """Separation index of every conv layer's output on training and test images."""
    figure, axis = plt.subplots(figsize=(7, 3.5))
    layers = range(1, len(train) + 1)
    axis.plot(layers, train, marker="o", label="train")
    axis.plot(layers, test, marker="s", label="test")
    axis.axvline(kept, color="red", linestyle="--", linewidth=0.8, label=f"kept {kept} layers")
    axis.set(xlabel="conv layer", ylabel="separation index", ylim=(0, 1.01), title=title)
    axis.legend()
    return _save(figure, path)


def plot_feature_si(selection: list[dict], path: Path, title: str) -> Path:
    """Separation index against the number of greedily selected features."""
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.plot(range(1, len(selection) + 1), [s["si"] for s in selection], marker=".")
    axis.set(xlabel="features selected", ylabel="separation index", ylim=(0, 1.01), title=title)
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path
