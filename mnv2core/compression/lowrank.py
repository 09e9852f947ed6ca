"""Low-rank factorisation of a Linear layer by SVD, and per-layer singular-value spectra."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError


class LowRankLinear(nn.Sequential):
    """``x -> second(first(x))`` with ``first``: n -> rank (no bias), ``second``: rank -> m.
    Stands in for an m x n ``nn.Linear`` with k(n + m) + m parameters instead of mn + m."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))
        self.in_features, self.out_features, self.rank = in_features, out_features, rank


def factorize_linear(linear: nn.Linear, rank: int) -> LowRankLinear:
    """The best rank-``rank`` approximation of ``linear`` (truncated SVD, the singular values
    split evenly between the two factors). At full rank it reproduces the layer."""
    out_features, in_features = linear.weight.shape
    if not 1 <= rank <= min(out_features, in_features):
        raise ConfigError(f"rank must be in [1, {min(out_features, in_features)}], got {rank}")
    u, s, vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    low_rank = LowRankLinear(in_features, out_features, rank, bias=linear.bias is not None)
    low_rank.to(linear.weight.device)
    with torch.no_grad():
        low_rank[0].weight.copy_((root[:, None] * vh[:rank]).float())
        low_rank[1].weight.copy_((u[:, :rank] * root).float())
        if linear.bias is not None:
            low_rank[1].bias.copy_(linear.bias)
    return low_rank


def cumulative_energy(singular_values: torch.Tensor) -> torch.Tensor:
    """Share of the total squared singular values held by the first k components, k = 1..n."""
    squared = torch.as_tensor(singular_values, dtype=torch.float64).pow(2)
    return squared.cumsum(0) / squared.sum()


def energy_rank(singular_values: torch.Tensor, energy: float = 0.95) -> int:
    """Fewest components whose squared singular values hold ``energy`` of the total."""
    if not 0 < energy <= 1:
        raise ConfigError(f"energy must be in (0, 1], got {energy}")
    cumulative = cumulative_energy(singular_values)
    return min(int((cumulative < energy - 1e-12).sum()) + 1, len(singular_values))


def ratio_rank(linear: nn.Linear, keep: float) -> int:
    """Rank keeping the fraction ``keep`` of the layer's full rank (at least 1)."""
    return max(1, math.floor(min(linear.weight.shape) * keep))


def layer_spectra(model: nn.Module, energy: float = 0.95) -> list[dict]:
    """The spectrum (see ``weight_spectrum``) of every conv and linear layer."""
    return [weight_spectrum(name, module, energy) for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))]


def named_spectra(model: nn.Module, names: list[str], energy: float = 0.95) -> list[dict]:
    """The spectra of the layers called ``names`` (as in ``model.named_modules()``)."""
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise ConfigError(f"no layer(s) {missing} in {type(model).__name__}; e.g. "
                          f"{[n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))][:6]}")
    return [weight_spectrum(name, modules[name], energy) for name in names]


def weight_spectrum(name: str, module: nn.Module, energy: float = 0.95) -> dict:
    """A layer's weight as a matrix (out x in*kh*kw), its singular values, and k95 (components
    holding ``energy`` of the spectrum) as count and fraction."""
    matrix = module.weight.detach().flatten(1).double().cpu()
    values = torch.linalg.svdvals(matrix)
    k = energy_rank(values, energy)
    return {"layer": name, "shape": list(matrix.shape), "rank": len(values), "k95": k,
            "k95_fraction": k / len(values), "singular_values": values.float().tolist()}
