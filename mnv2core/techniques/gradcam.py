"""Grad-CAM of a base model on a test sample spanning the classes: faithfulness
(deletion/insertion AUC), focus (top-10% mass share, entropy) and an overlay PNG of its least
confident right and most confident wrong predictions, captioned with class names and confidence."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..context import Artifact, Case, Context
from ..datasets import eval_batches
from ..deploy.twins import figure_path, test_set
from ..explain.faithfulness import concentration, deletion_insertion_auc
from ..explain.feature_maps import mean_maps, pick_layers, plot_feature_maps
from ..explain.gradcam import default_target_layer, feature_map_layers, grad_cam, plot_overlays
from ..metrics import HIGHER, LOWER, accuracy, figure, info
from ..registry import DEPLOYMENT, Analysis, Technique, present, register, register_analysis, require
from ..schema import NonNegative, Parameters, Positive

METRICS = (
    accuracy("sample_accuracy", "accuracy on the Grad-CAM sample"),
    info("deletion_auc", "fraction", "accuracy as the most salient pixels go (low: faithful)", LOWER),
    info("insertion_auc", "fraction", "accuracy as the most salient pixels come back (high: faithful)", HIGHER),
    info("top10_mass_share", "fraction", "share of the map's mass in its top 10% of pixels (focus)"),
    info("entropy", "fraction", "normalised entropy of the map (low: focused)"),
    info("layer", "text", "the layer whose map Grad-CAM reads"), info("feature_map", "list", "its height x width"),
    info("images", "count"), info("classes_in_sample", "count"), info("classes", "count"),
    figure("plot", "overlays of the least confident right and the most confident wrong images", on_page=True),
    info("feature_layers", "list", "the conv layers whose mean activation maps the feature-map figure shows"),
    figure("feature_maps", "mean activation maps of an early, a middle and the last conv layer", on_page=True),
    info("shown", "list", "the images the overlays show: sample index, true and predicted class, confidence"),
)


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    params = ctx.profile.deployments[case.method]
    model = base.model.eval()
    test = test_set(ctx, case, base, ctx.device, params["images"])  # every class, not the first one's
    images, labels = next(eval_batches(test, len(test)))
    layer = params["layer"] or default_target_layer(model, images)
    heatmaps, predicted, map_size = grad_cam(model, images, layer)
    deletion, insertion = deletion_insertion_auc(model, images, heatmaps, predicted, params["steps"])
    top_share, entropy = concentration(heatmaps)
    layers = pick_layers(feature_map_layers(model, images))
    features = plot_feature_maps(images[: params["overlays"]], mean_maps(model, images[: params["overlays"]], layers),
                                 figure_path(ctx, case, "features"),
                                 f"Mean activation maps {case.dataset} {case.model} {case.base}: early to last conv layer")
    shown, confidence = gallery(model, images, labels, predicted, params["overlays"])
    plot = plot_overlays(images[shown], heatmaps[shown], labels[shown], predicted[shown],
                         figure_path(ctx, case, "gradcam"),
                         f"Grad-CAM {case.dataset} {case.model} {case.base} ({layer}, map {map_size[0]}x{map_size[1]}): "
                         f"least confident right, most confident wrong",
                         ctx.dataset(case.dataset).classes, confidence[shown])
    return {"sample_accuracy": float((predicted == labels).float().mean()), "layer": layer,
            "feature_map": list(map_size), "input_size": base.meta["input_size"], "images": len(test),
            "classes_in_sample": int(labels.unique().numel()), "classes": ctx.dataset(case.dataset).num_classes,
            "deletion_auc": float(deletion.mean()), "insertion_auc": float(insertion.mean()),
            "top10_mass_share": float(top_share.mean()), "entropy": float(entropy.mean()), "plot": str(plot),
            "feature_layers": layers, "feature_maps": str(features),
            "shown": [{"image": int(i), "label": int(labels[i]), "predicted": int(predicted[i]),
                       "confidence": float(confidence[i])} for i in shown]}


@torch.no_grad()
def gallery(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor,
            count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample's indices to show: the ``count`` least confident right predictions, then the
    ``count`` most confident wrong ones (where a model errs, and where it is surest and still
    wrong); and every image's confidence (its top softmax probability)."""
    confidence = model(images).softmax(1).amax(1)
    right, wrong = (predicted == labels).nonzero().flatten(), (predicted != labels).nonzero().flatten()
    unsure = right[confidence[right].argsort(stable=True)[:count]]
    sure = wrong[confidence[wrong].argsort(descending=True, stable=True)[:count]]
    return torch.cat([unsure, sure]), confidence


def check(m: dict, case: Case) -> None:
    require(m["feature_map"][0] >= 1 and 0 <= m["entropy"] <= 1 and 0 < m["top10_mass_share"] <= 1,
            f"maps out of range: entropy {m['entropy']}, top-10% mass {m['top10_mass_share']}")
    require(0 <= m["deletion_auc"] <= 1 and 0 <= m["insertion_auc"] <= 1, "AUCs outside [0, 1]")
    require(m["classes_in_sample"] == min(m["classes"], m["images"]),
            f"the sample spans {m['classes_in_sample']} of {m['classes']} classes")
    for figure_file in (m["plot"], m["feature_maps"]):
        require(Path(figure_file).read_bytes()[:4] == b"\x89PNG", f"{figure_file} is not a PNG")


def rows(found) -> list[dict]:
    return [{"model": base, "input px": m["input_size"], "layer": m["layer"], "images": m["images"],
             "map": "x".join(str(v) for v in m["feature_map"]), "deletion AUC (low=faithful)": f"{m['deletion_auc']:.3f}",
             "insertion AUC (high=faithful)": f"{m['insertion_auc']:.3f}", "top-10% mass": f"{m['top10_mass_share']:.3f}",
             "entropy": f"{m['entropy']:.3f}", "overlays": m["plot"]} for base, m in found if "deletion_auc" in m]


class GradcamParameters(Parameters):
    layer: str = ""  # the conv feature map explained ("": the last one, found generically)
    images: Positive = 64
    overlays: NonNegative = 4
    steps: Positive = 10  # of the deletion and insertion curves


register(Technique("gradcam", DEPLOYMENT, "Grad-CAM", measure=measure, reusable=True, check=check,
                   params=GradcamParameters,
                   metrics=METRICS))
present("gradcam", table=("Grad-CAM: faithfulness and focus", rows))


def resolution_analysis(found: dict) -> str:
    """A few sentences from the Grad-CAM numbers: which input resolution and dataset give
    more faithful (insertion - deletion AUC) and more focused (top-10% mass) maps."""
    rows = [(label, m) for label, m in found["gradcam"] if "deletion_auc" in m]
    if len(rows) < 2:
        return ""

    def label(name, m):
        return f"{name} at {m['input_size']} px (map {'x'.join(map(str, m['feature_map']))})"

    def faithful(m):
        return m["insertion_auc"] - m["deletion_auc"]
    best = max(rows, key=lambda r: faithful(r[1]))
    worst = min(rows, key=lambda r: faithful(r[1]))
    focused = max(rows, key=lambda r: r[1]["top10_mass_share"])
    flat = [label(name, m) for name, m in rows if m["feature_map"] == [1, 1]]
    lines = [f"Most faithful maps: {label(*best)}, insertion - deletion AUC {faithful(best[1]):+.3f}; "
             f"least: {label(*worst)}, {faithful(worst[1]):+.3f}.",
             f"Most focused maps: {label(*focused)}, {focused[1]['top10_mass_share']:.0%} of the mass in the top 10% of pixels."]
    if flat:
        lines.append("At these inputs the last conv map is 1x1, so Grad-CAM cannot localise at all "
                     f"(one value spread over the image): {', '.join(flat)}.")
    return "Resolution study (generated from the Grad-CAM figures above)\n\n" + "\n".join(lines)


register_analysis(Analysis(("gradcam",), resolution_analysis, across_datasets=True))
