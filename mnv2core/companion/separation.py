"""Separation index (SI): how well features separate the classes, without training anything.

For every sample, find its nearest neighbour among the *other* samples (Euclidean distance).
The separation index is the fraction of samples whose nearest neighbour carries the same
label: 1.0 means every point sits next to its own class, while values near chance mean the
features mix the classes. The centre variant compares each sample with the class means
instead of with the other samples.

SI needs only features and labels, so it can rank layers (does a deeper layer separate the
classes better?) and channels (which few channels carry the separation?) of a network.
"""
from __future__ import annotations

import torch


def _prepare(features: torch.Tensor, labels: torch.Tensor, min_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten features to (n, d) float64 and check that the labels match them."""
    if features.dim() < 1 or labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must have shape (n,) matching features (n, ...); "
                         f"got features {tuple(features.shape)} and labels {tuple(labels.shape)}")
    n = features.shape[0]
    if n < min_n:
        raise ValueError(f"need at least {min_n} samples, got {n}")
    return features.reshape(n, -1).to(torch.float64), labels


def separation_index(features: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> float:
    """Fraction of samples whose nearest other sample has the same label.

    Distances are computed `chunk` rows at a time, so memory stays O(chunk * n).
    """
    x, labels = _prepare(features, labels, min_n=2)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n = x.shape[0]
    sq_norms = (x * x).sum(dim=1)
    same = 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = torch.arange(start, stop, device=x.device)
        # ||a||^2 - 2ab + ||b||^2 in float64; only the argmin matters, so no sqrt.
        dist = sq_norms[start:stop, None] - 2.0 * x[start:stop] @ x.T + sq_norms[None, :]
        dist[rows - start, rows] = float("inf")  # a sample is not its own neighbour
        nearest = dist.argmin(dim=1)
        same += int((labels[nearest] == labels[start:stop]).sum())
    return same / n


def center_separation_index(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose nearest class centre (mean feature vector) is their own class."""
    x, labels = _prepare(features, labels, min_n=1)
    classes, inverse = labels.unique(return_inverse=True)
    # Class centres: sum each class's rows, then divide by the class sizes.
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, inverse, x)
    counts = torch.bincount(inverse, minlength=len(classes)).to(x.dtype)
    centres = sums / counts[:, None]
    nearest = torch.cdist(x, centres).argmin(dim=1)
    return int((nearest == inverse).sum()) / x.shape[0]


def greedy_feature_selection(features: torch.Tensor, labels: torch.Tensor, max_features: int,
                             min_gain: float = 0.0, candidate_chunk: int = 32) -> list[tuple[int, float]]:
    """Forward selection of columns of `features` (n, c) by separation index.

    Each step adds the column whose addition gives the highest SI (ties -> lowest index) and
    records (column, SI after adding it). Stops after `max_features` columns, when no columns
    are left, or when the best gain is below `min_gain` (the first column is always taken).
    Memory per step is about candidate_chunk * n * n distances; no scaling is applied.
    """
    if features.dim() != 2:
        raise ValueError(f"features must have shape (n, c), got {tuple(features.shape)}")
    if max_features < 1 or candidate_chunk < 1:
        raise ValueError("max_features and candidate_chunk must be >= 1")
    _prepare(features, labels, min_n=2)
    n, c = features.shape
    dtype = torch.float64 if n <= 4096 else torch.float32
    x = features.to(dtype)

    # Squared distances over the selected columns; +inf on the diagonal excludes self-matches.
    dist = torch.zeros(n, n, dtype=dtype, device=x.device)
    dist.fill_diagonal_(float("inf"))

    selected: list[tuple[int, float]] = []
    current_si = float("-inf")
    while len(selected) < min(max_features, c):
        chosen = {j for j, _ in selected}
        candidates = [j for j in range(c) if j not in chosen]
        counts = []  # same-label nearest-neighbour counts, one per candidate (exact ties)
        for start in range(0, len(candidates), candidate_chunk):
            cols = x[:, candidates[start:start + candidate_chunk]].T  # (m, n)
            trial = dist[None] + (cols[:, :, None] - cols[:, None, :]) ** 2  # (m, n, n)
            nearest = trial.argmin(dim=2)  # (m, n)
            counts.append((labels[nearest] == labels[None, :]).sum(dim=1))
        counts = torch.cat(counts)
        best = int(counts.argmax())  # first maximum -> lowest column index
        best_si = int(counts[best]) / n
        if selected and best_si - current_si < min_gain:
            break
        j = candidates[best]
        dist += (x[:, j, None] - x[None, :, j]) ** 2
        selected.append((j, best_si))
        current_si = best_si
    return selected


def layers_to_keep(si_per_layer: list[float], min_gain: float) -> int:
    """Smallest k such that no layer after the first k beats the best of them by more than min_gain."""
    if not si_per_layer:
        raise ValueError("si_per_layer is empty")
    for k in range(1, len(si_per_layer)):
        if max(si_per_layer[k:]) <= max(si_per_layer[:k]) + min_gain:
            return k
    return len(si_per_layer)
