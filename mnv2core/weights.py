"""Where a model's starting weights come from, and their provenance (source + sha256).

Sources: ``imagenet`` (torchvision weights API, needs network or a warm torch hub cache),
a path to a local state-dict file, ``none`` (random init) or ``pretext`` (trained by the
harness on a synthetic task; the offline stand-in for ImageNet weights).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, WeightsUnavailableError
from .models import check_model_name

TORCHVISION_WEIGHTS = {
    "mobilenet_v2": ("MobileNet_V2_Weights", "IMAGENET1K_V1"),
    "resnet50": ("ResNet50_Weights", "IMAGENET1K_V2"),
    "resnet18": ("ResNet18_Weights", "IMAGENET1K_V1"),
}
KNOWN_FILES = {
    "3b7958144102a87b65773d56abdfc66f8a68d24e681c8db40ab08eb4d5741222":
        "MobileNetV2 converted from Google's int8 TFLite model; stand-in for IMAGENET1K_V1",
}


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # imagenet | file | none | pretext
    path: Path | None = None

    def describe(self) -> str:
        return f"file:{self.path.name}" if self.kind == "file" else self.kind  # with its sha256 in records


def parse_weights(spec: str) -> WeightsSource:
    if spec in ("imagenet", "none", "pretext"):
        return WeightsSource(spec)
    return WeightsSource("file", Path(spec).expanduser())


def weights_env_var(model: str) -> str:
    return f"MNV2BENCH_WEIGHTS_{model.upper()}"


def parse_weights_override(text: str) -> tuple[str, str]:
    """``MODEL=SPEC`` from ``--weights``."""
    model, sep, spec = text.partition("=")
    if not sep or not spec:
        raise ConfigError(f"bad --weights {text!r}: use MODEL=imagenet|none|pretext|PATH")
    check_model_name(model)
    return model, spec


def resolve_weights_spec(model: str, profile_spec: str, overrides: dict[str, str]) -> WeightsSource:
    """Option beats environment variable beats profile."""
    return parse_weights(overrides.get(model) or os.environ.get(weights_env_var(model)) or profile_spec)


def load_pretrained_state(model: str, source: WeightsSource) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The network's state dict and its provenance, for ``imagenet`` and file sources."""
    if source.kind == "file":
        return _load_file(model, source.path)
    if source.kind == "imagenet":
        return _load_torchvision(model)
    raise ValueError(f"{source.kind} weights are not loaded from disk")


def _load_file(model: str, path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file {path} for {model} does not exist; fix the path given by --weights "
            f"{model}=PATH or {weights_env_var(model)}, or use {model}=none / imagenet"
        )
    sha = file_sha256(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"cannot load weights file {path}: {exc}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path} does not hold a state dict of tensors")
    note = KNOWN_FILES.get(sha, "local weights file")
    return state, {"model": model, "source": f"file:{path.name}", "sha256": sha,
                   "stand_in": sha in KNOWN_FILES, "note": note}


def _load_torchvision(model: str) -> tuple[dict, dict]:
    import torchvision.models as tv_models

    enum_name, member = TORCHVISION_WEIGHTS[model]
    weights = getattr(getattr(tv_models, enum_name), member)
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"torchvision {enum_name}.{member} could not be loaded ({type(exc).__name__}: {exc}). "
            f"Without network, give a local copy: --weights {model}=PATH or "
            f"{weights_env_var(model)}=PATH (a torchvision {model} state dict), or train without "
            f"pretrained weights: --weights {model}=none"
        ) from None
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    return state, {"model": model, "source": f"torchvision:{enum_name}.{member}",
                   "sha256": file_sha256(file) if file.is_file() else None,
                   "stand_in": False, "note": weights.url}


def random_init_provenance(model: str, note: str = "random initialisation") -> dict[str, Any]:
    return {"model": model, "source": "none", "sha256": None, "stand_in": False, "note": note}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
