"""Deployment and security measurements of the study's models. Nothing here trains or is
cached: each case measures its base model (trained or compressed) in this run, so latency
is always of this machine, now."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..datasets import ImageSet, eval_batches
from ..training import evaluate
from .attacks import fgsm
from .int8_fx import quantize_fx
from .latency import measure_latency
from .onnx_runtime import export_onnx, ort_logits, ort_session
from .robustness import gaussian_blur, gaussian_noise

if TYPE_CHECKING:
    from ..study import Artifact, Study

INT8_FGSM_NOTE = "int8 model attacked with the gradients of its fp32 twin (int8 has none)"


class DeploymentCases:
    def __init__(self, study: "Study"):
        self.study = study
        self._techniques = {tech: (base, name, params) for tech, base, name, params in study.profile.deployment_cases()}
        self._measures: dict[str, Callable] = {"int8": self._int8, "onnx": self._onnx, "latency": self._latency,
                                               "fgsm": self._fgsm, "robustness": self._robustness}
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
        fp32 = evaluate(_cpu_copy(base.model), test, self.study.profile.eval_batch_size)
        int8 = evaluate(self._int8_model(dataset, base_name, base, params), test, self.study.profile.eval_batch_size)
        return {"accuracy": int8, "fp32_accuracy": fp32, "int8_drop": fp32 - int8, "max_drop": params["max_drop"],
                "calibration_images": params["calibration_batches"] * self._calibration_batch_size(),
                "backend": "fx x86"}

    def _onnx(self, dataset: str, base_name: str, base: "Artifact", params: dict) -> dict[str, Any]:
        label = f"{dataset}-{base_name}"
        path = export_onnx(_cpu_copy(base.model), base.meta["input_size"], self.study.cache.root / "onnx" / f"{label}.onnx")
        session = ort_session(path)
        model = _cpu_copy(base.model)
        test = self._test_set(dataset, base, "cpu")
        max_diff, agree, correct = 0.0, 0, 0
        with torch.no_grad():
            for images, labels in eval_batches(test, self.study.profile.eval_batch_size):
                reference, logits = model(images), ort_logits(session, images)
                max_diff = max(max_diff, float((reference - logits).abs().max()))
                agree += int((reference.argmax(1) == logits.argmax(1)).sum())
                correct += int((logits.argmax(1) == labels).sum())
        return {"accuracy": correct / len(test), "max_abs_logit_diff": max_diff, "top1_agreement": agree / len(test),
                "min_top1_agreement": params["min_top1_agreement"], "onnx_file": str(path),
                "onnx_bytes": path.stat().st_size}

    def _latency(self, dataset: str, base_name: str, base: "Artifact", params: dict) -> dict[str, Any]:
        size = base.meta["input_size"]
        fp32 = _cpu_copy(base.model)
        int8 = self._int8_model(dataset, base_name, base, self.study.profile.deployments.get("int8", DEFAULT_INT8))
        onnx_path = export_onnx(_cpu_copy(base.model), size, self.study.cache.root / "onnx" / f"{dataset}-{base_name}.onnx")
        session = ort_session(onnx_path, params["threads"])
        latency, spread, speedup = {}, {}, {}
        with _torch_threads(params["threads"]), torch.no_grad():
            for batch in params["batch_sizes"]:
                images = torch.rand(batch, 3, size, size)
                runners = {"eager_fp32": lambda: fp32(images), "fx_int8": lambda: int8(images),
                           "ort_fp32": lambda: session.run(None, {"images": images.numpy()})}
                for runner, run in runners.items():  # back to back, in this process
                    stats = measure_latency(run, params["warmup"], params["rounds"])
                    latency[f"{runner}_b{batch}_ms"] = stats["median_ms"]
                    spread[f"{runner}_b{batch}_iqr"] = stats["iqr_ms"]
                for runner in ("fx_int8", "ort_fp32"):
                    speedup[f"{runner}_b{batch}_speedup"] = latency[f"eager_fp32_b{batch}_ms"] / latency[f"{runner}_b{batch}_ms"]
        fastest = {f"b{b}": min(("eager_fp32", "fx_int8", "ort_fp32"), key=lambda r: latency[f"{r}_b{b}_ms"])
                   for b in params["batch_sizes"]}
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
            int8 = self._int8_model(dataset, base_name, base, self.study.profile.deployments["int8"])
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
        return {"accuracy": evaluate(model, test, batch), "blur": blur, "noise": noise}

    # helpers ----------------------------------------------------------------------------
    def _test_set(self, dataset: str, base: "Artifact", device) -> ImageSet:
        return self.study.data_at(dataset, base.meta["input_size"]).test.to(torch.device(device))

    def _calibration_batch_size(self) -> int:
        return 32

    def _int8_model(self, dataset: str, base_name: str, base: "Artifact", params: dict) -> torch.nn.Module:
        """FX int8 twin of the base, calibrated on the first training batches (no augmentation)."""
        key = (dataset, base_name)
        if key not in self._int8_models:
            train = self.study.data_at(dataset, base.meta["input_size"]).train
            batches = [images for images, _ in _first_batches(train, self._calibration_batch_size(),
                                                              params["calibration_batches"])]
            self._int8_models[key] = quantize_fx(base.model, batches, base.meta["input_size"])
        return self._int8_models[key]



DEFAULT_INT8 = {"calibration_batches": 8, "max_drop": 0.05}


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


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy
    return copy.deepcopy(model).cpu().eval()


@contextlib.contextmanager
def _torch_threads(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
