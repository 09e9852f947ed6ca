"""Pruning of the compression bases: iterative magnitude pruning, structured pruning of the
last conv (Torch-Pruning's dependency graph, any architecture it traces), and the lottery ticket (the pruned mask on the base's start
weights) against a random re-initialisation with the same mask."""
from __future__ import annotations

import copy
import itertools
from typing import Literal

import torch

from ..compression.channels import CRITERIA, count_macs, prune_last_conv_channels, state_dict_bytes
from ..compression.retraining import Retraining, compressing
from ..compression.unstructured import (
    SCOPES,
    apply_masks,
    empty_output_channels,
    layer_sparsity,
    make_permanent,
    masks_of,
    measured_sparsity,
    prune_magnitude,
    rewind,
)
from ..context import Case
from ..errors import ConfigError
from ..metrics import LOWER, accuracy, info
from ..models import build_model, count_parameters
from ..registry import COMPRESSION, Technique, present, register, require
from ..schema import Parameters, Positive, Share
from ..training import ended_accuracy

DENSE = accuracy("dense_accuracy", "the base's test accuracy", gated=False)
PRUNE_METRICS = (
    DENSE, info("sparsity", "fraction", "share of zero weights in the layers pruned"),
    info("sparsity_all_layers", "fraction"), info("target_sparsity", "fraction"),
    info("max_layer_sparsity", "fraction"), info("min_layer_sparsity", "fraction"),
    info("empty_output_channels", "count", "output units left with no weight"), info("scope", "text"),
    info("skip_depthwise", "bool"), info("rounds", "list", "sparsity and accuracy before and after each retraining"),
)
STRUCTURED_METRICS = (
    DENSE, accuracy("accuracy_before_retrain", "test accuracy right after the channels went"),
    info("criterion", "text"), info("layer", "text", "the conv whose output channels were removed"),
    info("coupled_layers", "list"), info("layers_not_prunable", "list", "later convs tried first, and why not"),
    info("channels_before", "count"), info("channels_after", "count"), info("predicted_removed_params", "count"),
    info("params_before", "count"), info("params_after", "count", better=LOWER),
    info("bytes_before", "bytes"), info("bytes_after", "bytes", better=LOWER),
    info("macs_before", "count"), info("macs_after", "count", better=LOWER),
)
LOTTERY_METRICS = (
    DENSE, accuracy("pruned_accuracy", "iterative pruning's last round", gated=False),
    accuracy("ticket_accuracy", "the ticket (pruned mask on the start weights), retrained"),
    accuracy("control_accuracy", "random reinitialisation at the same mask, retrained"),
    info("sparsity", "fraction"), info("control_sparsity", "fraction"),
    info("pruned_sparsity", "fraction", "sparsity of the iterative pruning whose mask the ticket takes"),
    info("mask_kept", "fraction", "share of masked-out weights still zero (ticket, control)"),
    info("reaches_dense", "bool"), info("control_epochs", "list"),
)


# iterative magnitude pruning --------------------------------------------------------------
def prune(job: Retraining, params: dict) -> tuple:
    model = copy.deepcopy(job.base.model)
    rounds, history = [], []
    for round_ in range(1, params["rounds"] + 1):
        prune_magnitude(model, params["amount"], params["scope"], params["skip_depthwise"])
        before = job.evaluate(model)
        epochs = job.retrain(model, f"round {round_}")
        history += epochs
        rounds.append({"round": round_, "sparsity": measured_sparsity(model, params["skip_depthwise"]),
                       "accuracy_before_retrain": before, "accuracy": ended_accuracy(epochs, before)})
    make_permanent(model)
    layers = layer_sparsity(model)
    metrics = {"dense_accuracy": job.base_accuracy(), "sparsity": measured_sparsity(model, params["skip_depthwise"]),
               "sparsity_all_layers": measured_sparsity(model), "scope": params["scope"],
               "skip_depthwise": params["skip_depthwise"],
               "target_sparsity": 1 - (1 - params["amount"]) ** params["rounds"], "rounds": rounds,
               "max_layer_sparsity": max(layers.values()), "min_layer_sparsity": min(layers.values()),
               "empty_output_channels": empty_output_channels(model)}
    return model, None, metrics, history


def check_prune(m: dict, case: Case) -> None:
    require(abs(m["sparsity"] - m["target_sparsity"]) <= 0.005,
            f"sparsity {m['sparsity']:.4f}, target {m['target_sparsity']:.4f}")
    sparsities = [r["sparsity"] for r in m["rounds"]]
    require(all(a < b for a, b in itertools.pairwise(sparsities)), f"sparsity must grow every round: {sparsities}")


def prune_rows(found) -> list[dict]:
    return [{"base": base, "scope": m.get("scope", "global"), "round": r["round"], "sparsity": f"{r['sparsity']:.3f}",
             "acc pruned": f"{r['accuracy_before_retrain']:.3f}", "acc retrained": f"{r['accuracy']:.3f}",
             **(_last_round_cells(m) if r["round"] == len(m["rounds"]) else {"sparsest layer": "", "dead units": ""})}
            for base, m in found for r in m.get("rounds", [])]


def _last_round_cells(m: dict) -> dict[str, str]:
    """How unevenly the pruned weights fall: the sparsest layer and the output units left
    with no weight at all (results recorded before these were measured show blanks)."""
    return {"sparsest layer": f"{m['max_layer_sparsity']:.3f}" if "max_layer_sparsity" in m else "",
            "dead units": str(m.get("empty_output_channels", ""))}


# structured pruning of the last conv ---------------------------------------------------------
def structured(job: Retraining, params: dict) -> tuple:
    dense = job.base.model
    size = job.input_size
    model, pruning = prune_last_conv_channels(dense, params["ratio"], params["criterion"], size)
    before = job.evaluate(model)
    history = job.retrain(model)
    metrics = {"dense_accuracy": job.base_accuracy(), "accuracy_before_retrain": before,
               "criterion": params["criterion"], "layer": pruning["layer"], "coupled_layers": pruning["coupled_layers"],
               "layers_not_prunable": pruning["skipped"],
               "channels_before": pruning["before"], "channels_after": pruning["before"] - len(pruning["channels"]),
               "predicted_removed_params": pruning["predicted_removed_params"],
               "params_before": count_parameters(dense), "params_after": count_parameters(model),
               "bytes_before": state_dict_bytes(dense), "bytes_after": state_dict_bytes(model),
               "macs_before": count_macs(dense, size), "macs_after": count_macs(model, size)}
    return model, {"pruned_channels": pruning}, metrics, history


def check_structured(m: dict, case: Case) -> None:
    # every removed channel takes its slice of each coupled layer (Torch-Pruning's group): the
    # parameters gone are exactly those the group predicted
    removed = m["params_before"] - m["params_after"]
    require(removed == m["predicted_removed_params"] > 0,
            f"pruning {m['layer']} removed {removed} parameters, not the {m['predicted_removed_params']} predicted")
    require(m["macs_after"] < m["macs_before"] and m["bytes_after"] < m["bytes_before"], "not smaller or cheaper")


def structured_rows(found) -> list[dict]:
    return [{"base": base, "layer": m.get("layer", ""), "channels": f"{m['channels_before']} -> {m['channels_after']}",
             "params (M)": f"{m['params_before'] / 1e6:.2f} -> {m['params_after'] / 1e6:.2f}",
             "size (MB)": f"{m['bytes_before'] / 1e6:.2f} -> {m['bytes_after'] / 1e6:.2f}",
             "MACs (M)": f"{m['macs_before'] / 1e6:.1f} -> {m['macs_after'] / 1e6:.1f}",
             "acc dense": f"{m['dense_accuracy']:.3f}", "acc pruned": f"{m['accuracy_before_retrain']:.3f}",
             "acc retrained": f"{m['accuracy']:.3f}"} for base, m in found if "channels_after" in m]


# lottery ticket ------------------------------------------------------------------------------
def lottery(job: Retraining, params: dict) -> tuple:
    if job.base.start_state is None:
        raise ConfigError(f"{job.label}: the base artifact has no saved start weights; rebuild it with --refresh")
    pruned = job.upstream("prune")
    masks = masks_of(pruned.model)
    skip = job.ctx.profile.compressions["prune"].params["skip_depthwise"]  # sparsity over the layers pruning saw
    spec, classes, device = job.base.model.spec, job.base.model.head.out_features, job.ctx.device
    ticket = build_model(spec, classes).to(device)
    rewind(ticket, job.base.start_state, masks)
    ticket_history = job.retrain(ticket, "ticket")
    make_permanent(ticket)
    torch.manual_seed(job.seed + 1)
    control = build_model(spec, classes).to(device)
    apply_masks(control, masks)
    control_history = job.retrain(control, "random reinit control")
    make_permanent(control)
    # validation may keep an epoch before the last: measure the weights each ends with
    dense, ticket_accuracy = job.base_accuracy(), job.evaluate(ticket)
    metrics = {"dense_accuracy": dense, "pruned_accuracy": pruned.meta["metrics"]["rounds"][-1]["accuracy"],
               "ticket_accuracy": ticket_accuracy, "control_accuracy": job.evaluate(control),
               "sparsity": measured_sparsity(ticket, skip), "control_sparsity": measured_sparsity(control, skip),
               "pruned_sparsity": pruned.meta["metrics"]["sparsity"],
               "mask_kept": {"ticket": _share_kept(ticket, masks), "control": _share_kept(control, masks)},
               "reaches_dense": ticket_accuracy >= dense, "control_epochs": control_history}
    return ticket, None, metrics, ticket_history


def _share_kept(model, masks) -> float:
    """Share of the masked-out weights that are zero in ``model`` (1.0: the mask held)."""
    pruned = [(~mask, weight) for mask, weight in zip(masks.values(), masks_of(model).values(), strict=True)]
    zeros = sum(int((keep_out & ~nonzero).sum()) for keep_out, nonzero in pruned)
    return zeros / max(1, sum(int(keep_out.sum()) for keep_out, _ in pruned))


def check_lottery(m: dict, case: Case) -> None:
    require(abs(m["sparsity"] - m["control_sparsity"]) < 1e-6, "ticket and control must share one mask")
    require(m["mask_kept"]["ticket"] == 1.0 and m["mask_kept"]["control"] == 1.0,
            f"weights outside the pruned mask survived: {m['mask_kept']}")
    require(abs(m["sparsity"] - m["pruned_sparsity"]) <= 0.005,
            f"sparsity {m['sparsity']:.3f}, pruning's {m['pruned_sparsity']:.3f}: the ticket must take pruning's mask")


def lottery_rows(found) -> list[dict]:
    return [{"base": base, "sparsity": f"{m['sparsity']:.3f}", "acc dense": f"{m['dense_accuracy']:.3f}",
             "acc pruned": f"{m['pruned_accuracy']:.3f}", "acc ticket": f"{m['ticket_accuracy']:.3f}",
             "acc random reinit": f"{m['control_accuracy']:.3f}",
             "reaches dense": "yes" if m["reaches_dense"] else "no"} for base, m in found if "ticket_accuracy" in m]


class PruneParameters(Parameters):
    rounds: Positive = 3
    amount: Share = 0.2  # of the remaining weights, per round
    scope: Literal[SCOPES] = "layer"
    skip_depthwise: bool = True


class StructuredParameters(Parameters):
    ratio: Share = 0.4  # of the last conv's output channels
    criterion: Literal[CRITERIA] = "l1"


register(Technique("prune", COMPRESSION, "Iterative magnitude pruning", builder=compressing(prune), check=check_prune,
                   params=PruneParameters,
                   metrics=PRUNE_METRICS))
present("prune", table=("Iterative magnitude pruning (a share of the remaining weights per round)", prune_rows),
        summary_column=("acc after pruning", "accuracy"))
register(Technique("structured", COMPRESSION, "Structured pruning of the last conv", builder=compressing(structured),
                   check=check_structured, params=StructuredParameters,
                   metrics=STRUCTURED_METRICS))
present("structured", table=("Structured pruning of the last conv", structured_rows))
register(Technique("lottery", COMPRESSION, "Lottery ticket", builder=compressing(lottery), check=check_lottery,
                   needs=("prune",),
                   metrics=LOTTERY_METRICS))
present("lottery", table=("Lottery ticket (rewound to the saved start weights) vs random reinit", lottery_rows))
