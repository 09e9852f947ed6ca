"""PNG plots of compression results (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import numpy as np  # noqa: E402


def plot_cumulative_energy(spectra: list[dict], path: Path, title: str, energy: float = 0.95) -> Path:
    """One curve per layer: cumulative spectral energy against the fraction of components."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = plt.cm.viridis(np.linspace(0, 1, max(len(spectra), 1)))
    for colour, layer in zip(colours, spectra, strict=False):  # one colour even for no layer
        squared = np.square(np.asarray(layer["singular_values"], dtype=np.float64))
        cumulative = np.cumsum(squared) / squared.sum()
        axis.plot(np.arange(1, len(cumulative) + 1) / len(cumulative), cumulative, color=colour, linewidth=0.8)
    axis.axhline(energy, color="red", linestyle="--", linewidth=0.8, label=f"{energy:.0%} energy")
    axis.set(xlabel="fraction of singular values kept", ylabel="cumulative energy", ylim=(0, 1.01),
             title=f"{title}\n(one curve per layer; dark = first layers, light = last)")
    axis.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_k95_by_layer(found: list[tuple[str, dict]], path: Path, dataset: str) -> Path | None:
    """k95 as a fraction of each layer's rank, layer by layer: ``found`` = (label, its
    spectra metrics)."""
    found = [(label, m["spectra"]) for label, m in found if m.get("spectra")]
    if not found:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    for label, layers in found:
        axes.plot(range(len(layers)), [layer["k95_fraction"] for layer in layers], marker=".", label=label)
    axes.set(xlabel="layer (network order)", ylabel="k95 / rank", ylim=(0, 1.05),
             title=f"{dataset}: components holding 95% of each layer's energy")
    axes.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    return path
