"""DeconvNet reconstructions of a base model (and guided backpropagation beside them): the
strongest activations of an early, a middle and the last conv layer over a test sample,
projected back to pixel space, in one figure beside their image patches; and how much of
each reconstruction lies on the input's edges, against a random-init twin's, and how much of
its first filters' energy is flat brightness or colour rather than edges."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from ..context import Artifact, Case, Context
from ..datasets import eval_batches
from ..deploy.twins import figure_path, test_set
from ..explain.deconvnet import RECTIFIERS, RULES, edge_share, flat_share, plot_reconstructions, reconstruct
from ..explain.feature_maps import pick_layers
from ..explain.gradcam import feature_map_layers
from ..metrics import figure, info
from ..models import build_model
from ..registry import DEPLOYMENT, Technique, present, register, require
from ..schema import Parameters, Positive

METRICS = (
    info("layers", "list", "the conv layers reconstructed, early to last"),
    info("edge_share.*", "fraction", "share of the reconstructions' magnitude on the input's edges, per layer"),
    info("random_edge_share.*", "fraction", "the same for a random-init twin of the model: what the "
                                            "architecture alone shows"),
    info("flat_share", "fraction", "of the first conv's filters, the share of their energy in their mean: "
                                   "brightness and colour, where edge detectors have none"),
    info("random_flat_share", "fraction", "the same for the random-init twin (about 1/9 for 3x3 filters)"),
    info("rectifiers", "count", "ReLU modules whose backward the rule replaced"),
    info("images", "count"), info("rule", "text"),
    figure("plot", "the strongest activations' reconstructions beside their image patches", on_page=True),
)


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    params = ctx.profile.deployments[case.method]
    model = base.model.eval()
    test = test_set(ctx, case, base, ctx.device, params["images"])
    images, _ = next(eval_batches(test, len(test)))
    layers = pick_layers(feature_map_layers(model, images))
    found = {layer: reconstruct(model, images, layer, params["count"], params["rule"]) for layer in layers}
    torch.manual_seed(ctx.seed_for(case.dataset, "deconvnet-twin"))
    twin = build_model(model.spec, ctx.dataset(case.dataset).num_classes).to(images.device).eval()
    shares = {layer: _mean_share(found[layer], images) for layer in layers}
    random_shares = {layer: _mean_share(reconstruct(twin, images, layer, params["count"], params["rule"]), images)
                     for layer in layers}
    plot = plot_reconstructions(images, found, figure_path(ctx, case, f"{params['rule']}"),
                                f"{params['rule']} {case.dataset} {case.model} {case.base}: strongest activations, "
                                f"early to last layer, above their image patches")
    rectifiers = sum(isinstance(m, RECTIFIERS) for m in model.modules())
    return {"layers": layers, "edge_share": shares, "random_edge_share": random_shares,
            "flat_share": flat_share(model), "random_flat_share": flat_share(twin), "rectifiers": rectifiers,
            "images": len(test), "rule": params["rule"], "input_size": base.meta["input_size"], "plot": str(plot)}


def _mean_share(found, images) -> float:
    return sum(edge_share(item, images) for item in found) / len(found)


def check(m: dict, case: Case) -> None:
    shares = [*m["edge_share"].values(), *m["random_edge_share"].values(),
              *(v for v in (m["flat_share"], m["random_flat_share"]) if v is not None)]
    require(m["layers"] and all(0 <= v <= 1 + 1e-6 for v in shares),
            f"shares outside [0, 1]: {m['edge_share']}, {m['random_edge_share']}, {m['flat_share']}")
    require(Path(m["plot"]).read_bytes()[:4] == b"\x89PNG", f"{m['plot']} is not a PNG")


def rows(found) -> list[dict]:
    return [{"model": base, "rule": m["rule"], "layer": layer, "edge share": f"{share:.3f}",
             "random-init twin": f"{m['random_edge_share'][layer]:.3f}", **_flat(m), "rectifiers": m["rectifiers"],
             "figure": m["plot"]}
            for base, m in found for layer, share in m.get("edge_share", {}).items()]


def _flat(m: dict) -> dict[str, str]:
    """The first conv's flat share beside its twin's, where the record has it."""
    if m.get("flat_share") is None:
        return {}
    return {"first conv flat share (twin)": f"{m['flat_share']:.2f} ({m['random_flat_share']:.2f})"}


class DeconvnetParameters(Parameters):
    images: Positive = 32  # the test sample whose strongest activations are reconstructed
    count: Positive = 6    # reconstructions per layer (the strongest channels)
    rule: Literal[RULES] = "deconvnet"  # or "guided": guided backpropagation


register(Technique("deconvnet", DEPLOYMENT, "DeconvNet", measure=measure, reusable=True, check=check,
                   params=DeconvnetParameters, metrics=METRICS))
present("deconvnet", table=("DeconvNet reconstructions: share of their magnitude on the input's edges", rows))
