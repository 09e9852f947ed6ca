"""Low-rank compression of the compression bases' classifier (truncated SVD at the rank
holding the profile's energy and at fixed keep ratios, each recovered by retraining) and the
singular-value spectra of every layer (an analysis: nothing retrained, no floor)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field

from ..compression.channels import state_dict_bytes
from ..compression.lowrank import cumulative_energy, energy_rank, factorize_linear, layer_spectra, ratio_rank
from ..compression.plots import plot_cumulative_energy, plot_k95_by_layer
from ..compression.retraining import Retraining, compressing
from ..context import Case
from ..metrics import accuracy, figure, info
from ..models import count_parameters
from ..registry import COMPRESSION, Technique, present, register, require
from ..schema import Parameters
from ..training import ended_accuracy

SVD_METRICS = (
    accuracy("dense_accuracy", "the base's test accuracy", gated=False),
    info("variants", "list", "each rank kept: parameters, accuracy before and after recovery"),
    info("head_shape", "list"), info("energy", "fraction"), info("head_params_before", "count"),
    info("params_before", "count"), info("bytes_before", "bytes"),
)
SPECTRA_METRICS = (
    info("layers", "count"), info("energy", "fraction"), info("mean_k95_fraction", "fraction"),
    info("head_k95", "count"), info("spectra", "list", "each layer's shape, rank, k95 and energy around it"),
    figure("plot", "cumulative energy of every layer"), info("singular_values_file", "path"),
)


def svd(job: Retraining, params: dict) -> tuple:
    dense = job.base.model
    head = dense.head
    singular = torch.linalg.svdvals(head.weight.detach().double())
    ranks = {f"energy {params['energy']:.0%}": energy_rank(singular, params["energy"])}
    ranks.update({f"keep {keep:g}": ratio_rank(head, keep) for keep in params["keep_ratios"]})
    variants, models = [], []
    for name, rank in ranks.items():
        model = copy.deepcopy(dense)
        model.set_head(factorize_linear(head, rank))
        residual = residual_energy(head.weight, model.head)  # before recovery changes the factors
        before = job.evaluate(model)
        epochs = job.retrain(model, f"rank {rank}")
        models.append(model)
        variants.append({"variant": name, "rank": rank, "head_params": count_parameters(model.head),
                         "params": count_parameters(model), "bytes": state_dict_bytes(model),
                         "residual_energy": residual, "accuracy_before_recovery": before,
                         "accuracy": ended_accuracy(epochs, before), "epochs": epochs})
    metrics = {"dense_accuracy": job.base_accuracy(), "head_shape": list(head.weight.shape),
               "energy": params["energy"], "head_params_before": count_parameters(head),
               "params_before": count_parameters(dense), "bytes_before": state_dict_bytes(dense),
               "variants": variants}
    # the case's model is the first variant: the rank holding the profile's energy
    return models[0], {"head_rank": variants[0]["rank"]}, metrics, variants[0]["epochs"]


def residual_energy(weight: torch.Tensor, low_rank) -> float:
    """||W - W_k||^2 / ||W||^2 of the factorised head's product W_k: the energy it drops."""
    product = low_rank[1].weight.detach().double() @ low_rank[0].weight.detach().double()
    original = weight.detach().double()
    return float((original - product).pow(2).sum() / original.pow(2).sum())


def check_svd(m: dict, case: Case) -> None:
    by_energy = m["variants"][0]
    # truncated SVD keeps exactly the top singular values: the energy variant drops at most 1 - energy
    require(by_energy["residual_energy"] <= 1 - m["energy"] + 1e-6,
            f"rank {by_energy['rank']} drops {by_energy['residual_energy']:.4f} of the energy, more than "
            f"1 - {m['energy']}")
    for v in m["variants"]:
        require(1 <= v["rank"] <= min(m["head_shape"]), f"rank {v['rank']} outside [1, {min(m['head_shape'])}]")
        if v["rank"] * sum(m["head_shape"]) < m["head_shape"][0] * m["head_shape"][1]:
            require(v["params"] < m["params_before"], f"rank {v['rank']} did not shrink the model")


def svd_rows(found) -> list[dict]:
    rows = []
    for base, m in found:
        rows.append({"base": base, "head": f"{m['head_shape'][0]}x{m['head_shape'][1]} (dense)", "rank": "",
                     "head params": m["head_params_before"], "size (MB)": f"{m['bytes_before'] / 1e6:.3f}",
                     "dropped energy": "", "acc before": "", "acc recovered": f"{m['dense_accuracy']:.3f}"})
        rows += [{"base": base, "head": v["variant"], "rank": v["rank"], "head params": v["head_params"],
                  "size (MB)": f"{v['bytes'] / 1e6:.3f}", "dropped energy": f"{v['residual_energy']:.3f}",
                  "acc before": f"{v['accuracy_before_recovery']:.3f}", "acc recovered": f"{v['accuracy']:.3f}"}
                 for v in m.get("variants", [])]
    return rows


def spectra(job: Retraining, params: dict) -> tuple:
    layers = layer_spectra(job.base.model, params["energy"])
    folder = job.ctx.cache_root / "spectra"  # kept with the artifact they describe
    folder.mkdir(parents=True, exist_ok=True)
    values_file = folder / f"{job.label}.json"
    values_file.write_text(json.dumps(layers))
    plot = plot_cumulative_energy(layers, folder / f"{job.label}.png", job.label, params["energy"])
    summary = [{**{k: layer[k] for k in ("layer", "shape", "rank", "k95", "k95_fraction")},
                **_energy_around_k(layer["singular_values"], layer["k95"])} for layer in layers]
    fractions = [layer["k95_fraction"] for layer in layers]
    metrics = {"layers": len(layers), "energy": params["energy"], "mean_k95_fraction": sum(fractions) / len(fractions),
               "head_k95": layers[-1]["k95"], "spectra": summary, "plot": str(plot),
               "singular_values_file": str(values_file)}
    return job.base.model, None, metrics, []


def _energy_around_k(values: list[float], k: int) -> dict[str, float]:
    cumulative = cumulative_energy(values)
    return {"energy_at_k95": float(cumulative[k - 1]), "energy_below_k95": float(cumulative[k - 2]) if k > 1 else 0.0}


# k95 comes from float64 singular values, the energies around it from the float32 ones the
# record keeps: they may differ by this much
STORED_ENERGY_ERROR = 1e-6


def check_spectra(m: dict, case: Case) -> None:
    for layer in m["spectra"]:
        # k95 is the fewest components holding the energy: k95 hold it, k95 - 1 do not
        holds = layer["energy_at_k95"] >= m["energy"] - STORED_ENERGY_ERROR
        fewest = layer["energy_below_k95"] < m["energy"] + STORED_ENERGY_ERROR
        require(holds and fewest, f"{layer['layer']}: k95 {layer['k95']} is not the fewest components holding "
                                  f"{m['energy']} ({layer['energy_below_k95']:.7f} below it, {layer['energy_at_k95']:.7f} at it)")
    require(Path(m["plot"]).is_file() and Path(m["singular_values_file"]).is_file(), "spectra files missing")


def spectra_rows(found) -> list[dict]:
    return [{"base": base, "layers": m["layers"], "mean k95 fraction": f"{m['mean_k95_fraction']:.3f}",
             "classifier k95": m["head_k95"], "plot": m["plot"]} for base, m in found if "layers" in m]


Energy = Annotated[float, Field(ge=0.01, le=1.0)]  # a share of the squared singular values


class SpectraParameters(Parameters):
    energy: Energy = 0.95


class SvdParameters(SpectraParameters):
    keep_ratios: list[Annotated[float, Field(ge=0.001, le=1.0)]] = [0.5, 0.2]  # of the full rank


register(Technique("svd", COMPRESSION, "SVD low-rank classifier", builder=compressing(svd), check=check_svd,
                   params=SvdParameters, metrics=SVD_METRICS))
present("svd", table=("SVD low-rank classifier", svd_rows))
register(Technique("spectra", COMPRESSION, "Singular-value spectra", builder=compressing(spectra), check=check_spectra,
                   params=SpectraParameters, floored=False,
                   metrics=SPECTRA_METRICS))
present("spectra", table=("Singular-value spectra (k95: components holding 95% of the energy)", spectra_rows),
        page_plot=plot_k95_by_layer)
