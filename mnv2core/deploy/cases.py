"""Deployment and security measurements of the study's models. Nothing here trains or is
cached: each case measures its base model (trained or compressed) in this run, so latency
is always of this machine, now."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from filelock import FileLock

from ..cache import ArtifactCache
from ..datasets import ImageSet, eval_batches
from ..profiles import DEPLOYMENTS
from ..training import evaluate
from ..explain.faithfulness import concentration, deletion_insertion_auc
from ..explain.gradcam import default_target_layer, grad_cam, plot_overlays
from .attacks import fgsm
from .int8_fx import quantize_fx
from .latency import cpu_copy, time_runners
from .onnx_runtime import export_onnx, ort_logits, ort_session, quantize_onnx_static
from .robustness import gaussian_blur, gaussian_noise, plot_robustness

if TYPE_CHECKING:
    from ..study import Artifact, Study

INT8_FGSM_NOTE = "int8 model attacked with the gradients of its fp32 twin (int8 has none)"
CALIBRATION_BATCH = 32  # images per int8 calibration batch (FX and ONNX Runtime alike)


class DeploymentCases:
    def __init__(self, study: "Study"):
        self.study = study
        self._techniques = {tech: (base, name, params) for tech, base, name, params in study.profile.deployment_cases()}
        self._measures: dict[str, Callable] = {"int8": self._int8, "onnx": self._onnx, "latency": self._latency,
                                               "fgsm": self._fgsm, "robustness": self._robustness,
                                               "gradcam": self._gradcam}
        self._int8_models: dict[tuple[str, str], torch.nn.Module] = {}

    def handles(self, technique: str) -> bool:
        return technique in self._techniques

    def base_artifact(self, dataset: str, technique: str) -> "Artifact":
        base_name, _, _ = self._techniques[technique]
        return self.study.artifact(dataset, base_name)

    def measure(self, dataset: str, technique: str) -> tuple[dict[str, Any], dict[str, str]]:
        """This case's metrics (``accuracy`` first) and its record tags."""
        base_name, name, params = self._techniques[technique]
        metrics = self._measures[name](dataset, base_name, self.base_artifact(dataset, technique), params)
        return metrics, {"base": base_name, "derived": name}

    # measurements ---------------------------------------------------------------------
    def _int8(self, dataset: str, base_name: str, base: "Artifact", params: dict) -> dict[str, Any]:
        test = self._test_set(dataset, base, "cpu")
        fp32 = evaluate(cpu_copy(base.model), test, self.study.profile.eval_batch_size)
        int8 = evaluate(self._int8_model(dataset, base_name, base), test, self.study.profile.eval_batch_size)
        return {"accuracy": int8, "fp32_accuracy": fp32, "int8_drop": fp32 - int8, "max_drop": params["max_drop"],
                "calibration_images": sum(len(b) for b in self._calibration(dataset, base)),
                "backend": "fx x86"}

    def _onnx(self, dataset: str, base_name: str, base: "Artifact", params: dict) -> dict[str, Any]:
        fp32_path, int8_path = self._onnx_files(dataset, base_name, base)
        session, int8_session = ort_session(fp32_path), ort_session(int8_path)
        model = cpu_copy(base.model)
        test = self._test_set(dataset, base, "cpu")
        max_diff, agree, correct, int8_correct = 0.0, 0, 0, 0
        with torch.no_grad():
            for images, labels in eval_batches(test, self.study.profile.eval_batch_size):
                reference, logits = model(images), ort_logits(session, images)
                max_diff = max(max_diff, float((reference - logits).abs().max()))
                agree += int((reference.argmax(1) == logits.argmax(1)).sum())
                correct += int((logits.argmax(1) == labels).sum())
                int8_correct += int((ort_logits(int8_session, images).argmax(1) == labels).sum())
        return {"accuracy": correct / len(test), "max_abs_logit_diff": max_diff, "top1_agreement": agree / len(test),
                "min_top1_agreement": params["min_top1_agreement"], "ort_int8_accuracy": int8_correct / len(test),
                "onnx_file": str(fp32_path), "onnx_bytes": fp32_path.stat().st_size,
                "onnx_int8_bytes": int8_path.stat().st_size}

    def _latency(self, dataset: str, base_name: str, base: "Artifact", params: dict) -> dict[str, Any]:
        size = base.meta["input_size"]
        fp32 = cpu_copy(base.model)
        int8 = self._int8_model(dataset, base_name, base)
        fp32_path, int8_path = self._onnx_files(dataset, base_name, base)
        session, int8_session = ort_session(fp32_path, params["threads"]), ort_session(int8_path, params["threads"])
        runners = {"eager_fp32": fp32, "fx_int8": int8,
                   "ort_fp32": lambda images: session.run(None, {"images": images.numpy()}),
                   "ort_int8": lambda images: int8_session.run(None, {"images": images.numpy()})}
        timed = time_runners(runners, size, params["batch_sizes"], params["warmup"], params["rounds"],
                             params["threads"], self.study.timer)
        latency, spread = timed["latency"], timed["latency_iqr"]
        speedup = {f"{r}_b{b}_speedup": latency[f"eager_fp32_b{b}_ms"] / latency[f"{r}_b{b}_ms"]
                   for b in params["batch_sizes"] for r in list(runners)[1:]}
        fastest = {f"b{b}": min(runners, key=lambda r: latency[f"{r}_b{b}_ms"]) for b in params["batch_sizes"]}
        return {"latency": latency, "latency_iqr": spread, "speedup": speedup, "fastest": fastest,
                "threads": params["threads"], "rounds": params["rounds"], "input_size": size}

    def _fgsm(self, dataset: str, base_name: str, base: "Artifact", params: dict) -> dict[str, Any]:
        model = base.model.eval()
        epsilon = params["epsilon"]
        test = self._test_set(dataset, base, self.study.device)
        clean = evaluate(model, test, self.study.profile.eval_batch_size)
        attacked = [(fgsm(model, images, labels, epsilon), labels)
                    for images, labels in eval_batches(test, self.study.profile.eval_batch_size)]
        metrics = {"accuracy": accuracy_on(model, attacked), "clean_accuracy": clean, "epsilon": epsilon}
        if "int8" in self.study.profile.deployments:
            int8 = self._int8_model(dataset, base_name, base)
            on_cpu = [(images.cpu(), labels.cpu()) for images, labels in attacked]
            metrics.update({"int8_fgsm_accuracy": accuracy_on(int8, on_cpu),
                            "int8_clean_accuracy": evaluate(int8, test.to(torch.device("cpu")),
                                                            self.study.profile.eval_batch_size),
                            "int8_note": INT8_FGSM_NOTE})
        return metrics

    def _robustness(self, dataset: str, base_name: str, base: "Artifact", params: dict) -> dict[str, Any]:
        model = base.model.eval()
        test = self._test_set(dataset, base, self.study.device)
        batch = self.study.profile.eval_batch_size
        generator = torch.Generator(device=test.images.device).manual_seed(self.study.seed_for(dataset, "noise"))
        def corrupted(transform):
            return accuracy_on(model, ((transform(images), labels) for images, labels in eval_batches(test, batch)))

        blur = {f"sigma_{s:g}_accuracy": corrupted(lambda x: gaussian_blur(x, s)) for s in params["blur_sigmas"]}
        noise = {f"sigma_{s:g}_accuracy": corrupted(lambda x: gaussian_noise(x, s, generator))
                 for s in params["noise_sigmas"]}
        clean = evaluate(model, test, batch)
        plot = plot_robustness(clean, params["blur_sigmas"], list(blur.values()), params["noise_sigmas"],
                               list(noise.values()), self.study.settings.results_dir / "plots" /
                               f"{dataset}-{base_name}-robustness.png", f"{dataset} {base_name}")
        return {"accuracy": clean, "blur": blur, "noise": noise, "plot": str(plot)}

    def _gradcam(self, dataset: str, base_name: str, base: "Artifact", params: dict) -> dict[str, Any]:
        """Grad-CAM on the first test images: faithfulness (deletion/insertion AUC) and focus
        (top-10% mass share, entropy), and an overlay PNG of correct and misclassified images."""
        model = base.model.eval()
        layer = params["layer"] or default_target_layer(model)
        test = self._test_set(dataset, base, self.study.device).head(params["images"])
        images, labels = next(eval_batches(test, len(test)))
        heatmaps, predicted, map_size = grad_cam(model, images, layer)
        deletion, insertion = deletion_insertion_auc(model, images, heatmaps, predicted, params["steps"])
        top_share, entropy = concentration(heatmaps)
        correct = (predicted == labels).nonzero().flatten()[: params["overlays"]]
        wrong = (predicted != labels).nonzero().flatten()[: params["overlays"]]
        shown = torch.cat([correct, wrong])
        plot = plot_overlays(images[shown], heatmaps[shown], labels[shown], predicted[shown],
                             self.study.settings.results_dir / "plots" / f"{dataset}-{base_name}-gradcam.png",
                             f"Grad-CAM {dataset} {base_name} ({layer}, map {map_size[0]}x{map_size[1]})")
        return {"accuracy": float((predicted == labels).float().mean()), "layer": layer,
                "feature_map": list(map_size), "input_size": base.meta["input_size"], "images": len(test),
                "deletion_auc": float(deletion.mean()), "insertion_auc": float(insertion.mean()),
                "top10_mass_share": float(top_share.mean()), "entropy": float(entropy.mean()), "plot": str(plot)}

    # helpers ----------------------------------------------------------------------------
    def _test_set(self, dataset: str, base: "Artifact", device) -> ImageSet:
        return self.study.data_at(dataset, base.meta["input_size"]).test.to(torch.device(device))

    def _int8_params(self) -> dict:
        return self.study.profile.deployments.get("int8", DEPLOYMENTS["int8"])

    def _calibration(self, dataset: str, base: "Artifact") -> list[torch.Tensor]:
        """The first training batches (no augmentation): calibration for FX and ORT int8 alike."""
        train = self.study.data_at(dataset, base.meta["input_size"]).train
        count = self._int8_params()["calibration_batches"]
        return [images for images, _ in _first_batches(train, CALIBRATION_BATCH, count)]

    def _int8_model(self, dataset: str, base_name: str, base: "Artifact") -> torch.nn.Module:
        """FX int8 twin of the base (made once per process)."""
        key = (dataset, base_name)
        if key not in self._int8_models:
            self._int8_models[key] = quantize_fx(base.model, self._calibration(dataset, base), base.meta["input_size"])
        return self._int8_models[key]

    def _onnx_files(self, dataset: str, base_name: str, base: "Artifact") -> tuple[Path, Path]:
        """The base exported to ONNX (fp32) and its ORT static int8 twin, kept in the cache
        under a key of the base's key and the calibration (so they match both) and made by one
        process at a time."""
        folder = self.study.cache.root / "onnx"
        folder.mkdir(parents=True, exist_ok=True)
        key = ArtifactCache.key({"base": base.key, "calibration_batches": self._int8_params()["calibration_batches"],
                                 "calibration_batch": CALIBRATION_BATCH})
        stem = folder / f"{dataset}-{base_name}-{key}"
        fp32_path, int8_path = stem.with_suffix(".onnx"), stem.with_suffix(".int8.onnx")
        with FileLock(f"{stem}.lock"):
            if not int8_path.exists():  # written last: its presence means both are complete
                export_onnx(cpu_copy(base.model), base.meta["input_size"], fp32_path)
                partial = stem.with_suffix(".int8-partial.onnx")
                quantize_onnx_static(fp32_path, partial, self._calibration(dataset, base))
                os.replace(partial, int8_path)
        return fp32_path, int8_path

def _first_batches(train: ImageSet, batch_size: int, count: int):
    for index, batch in enumerate(eval_batches(train, batch_size)):
        if index == count:
            return
        yield batch


@torch.no_grad()
def accuracy_on(model: torch.nn.Module, batches) -> float:
    """Top-1 accuracy over (float images, labels) batches."""
    model.eval()
    correct = total = 0
    for images, labels in batches:
        correct += int((model(images).argmax(1) == labels).sum())
        total += labels.shape[0]
    return correct / total
