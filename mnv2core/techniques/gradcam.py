"""Grad-CAM of a base model on a test sample spanning the classes: faithfulness
(deletion/insertion AUC), focus (top-10% mass share, entropy) and an overlay PNG of correct
and misclassified images captioned with class names."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..context import Artifact, Case, Context
from ..datasets import eval_batches
from ..deploy.twins import test_set
from ..explain.faithfulness import concentration, deletion_insertion_auc
from ..explain.gradcam import default_target_layer, grad_cam, plot_overlays
from ..registry import DEPLOYMENT, Technique, register, require


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    params = ctx.profile.deployments[case.method]
    model = base.model.eval()
    test = test_set(ctx, case, base, ctx.device).spread(params["images"])  # every class, not the first one's
    images, labels = next(eval_batches(test, len(test)))
    layer = params["layer"] or default_target_layer(model, images)
    heatmaps, predicted, map_size = grad_cam(model, images, layer)
    deletion, insertion = deletion_insertion_auc(model, images, heatmaps, predicted, params["steps"])
    top_share, entropy = concentration(heatmaps)
    correct = (predicted == labels).nonzero().flatten()[: params["overlays"]]
    wrong = (predicted != labels).nonzero().flatten()[: params["overlays"]]
    shown = torch.cat([correct, wrong])
    plot = plot_overlays(images[shown], heatmaps[shown], labels[shown], predicted[shown],
                         ctx.plots_dir / f"{case.dataset}-{case.base}-gradcam.png",
                         f"Grad-CAM {case.dataset} {case.base} ({layer}, map {map_size[0]}x{map_size[1]})",
                         ctx.dataset(case.dataset).classes)
    return {"sample_accuracy": float((predicted == labels).float().mean()), "layer": layer,
            "feature_map": list(map_size), "input_size": base.meta["input_size"], "images": len(test),
            "classes_in_sample": int(labels.unique().numel()), "classes": ctx.dataset(case.dataset).num_classes,
            "deletion_auc": float(deletion.mean()), "insertion_auc": float(insertion.mean()),
            "top10_mass_share": float(top_share.mean()), "entropy": float(entropy.mean()), "plot": str(plot)}


def check(m: dict, case: Case) -> None:
    require(m["feature_map"][0] >= 1 and 0 <= m["entropy"] <= 1 and 0 < m["top10_mass_share"] <= 1,
            f"maps out of range: entropy {m['entropy']}, top-10% mass {m['top10_mass_share']}")
    require(0 <= m["deletion_auc"] <= 1 and 0 <= m["insertion_auc"] <= 1, "AUCs outside [0, 1]")
    require(m["classes_in_sample"] == min(m["classes"], m["images"]),
            f"the sample spans {m['classes_in_sample']} of {m['classes']} classes")
    require(Path(m["plot"]).read_bytes()[:4] == b"\x89PNG", f"{m['plot']} is not a PNG")


def rows(found) -> list[dict]:
    return [{"model": base, "input px": m["input_size"], "layer": m["layer"], "images": m["images"],
             "map": "x".join(str(v) for v in m["feature_map"]), "deletion AUC (low=faithful)": f"{m['deletion_auc']:.3f}",
             "insertion AUC (high=faithful)": f"{m['insertion_auc']:.3f}", "top-10% mass": f"{m['top10_mass_share']:.3f}",
             "entropy": f"{m['entropy']:.3f}", "overlays": m["plot"]} for base, m in found if "deletion_auc" in m]


register(Technique("gradcam", DEPLOYMENT, "Grad-CAM", measure=measure, reusable=True, check=check,
                   params={"layer": "", "images": 64, "overlays": 4, "steps": 10},
                   ranges={"images": (1, None), "steps": (1, None)},
                   table=("Grad-CAM: faithfulness and focus", rows)))
