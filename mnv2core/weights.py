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
from .models import ModelSpec, _torchvision_weights, spec_of

# weights files this project's machines hold (../shared/weights), by sha256: (note, stand-in?);
# a stand-in is named as such in every report
KNOWN_FILES = {
    "3b7958144102a87b65773d56abdfc66f8a68d24e681c8db40ab08eb4d5741222":
        ("MobileNetV2 converted from Google's int8 TFLite model; stand-in for IMAGENET1K_V1", True),
    "e5503a1fd56323947beaaaebaaf979fb0d9ba68d20db685039ed72f3b9ae99a5":
        ("EfficientNet-Lite0 ImageNet weights converted from TensorFlow's official port (Apache-2.0)", False),
    "9d183798a810d5885f16a4a50ed4217d6df8ec7c6cb78a90cd60137de354670d":
        ("CIFAR-10 ResNet-20, akamaster/pytorch_resnet_cifar10 (c) 2018 Yerlan Idelbayev, BSD-2-Clause; "
         "trained on lossless CIFAR-10", False),
    "81d6912ce86cfcf0fbb68942febbc0e2c24e5290e6fd87dc1351a22a872e5e4d":
        ("CIFAR-10 ResNet-56, akamaster/pytorch_resnet_cifar10 (c) 2018 Yerlan Idelbayev, BSD-2-Clause; "
         "trained on lossless CIFAR-10", False),
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


def unused_weights(overrides: dict[str, str], models: set[str], environ: dict[str, str]) -> list[str]:
    """Check the run's weights against the ``models`` it runs: a ``--weights`` name that is none
    of them is a ConfigError (a misspelled name would silently leave the model on other
    weights); returns a warning per ``MNV2BENCH_WEIGHTS_*`` variable of no such model (tox
    passes every variable to every environment, so those only warn)."""
    unknown = sorted(set(overrides) - models)
    if unknown:
        raise ConfigError(f"--weights names {unknown}, which this run does not use; its models: {sorted(models)}")
    wanted = {weights_env_var(model) for model in models}
    return [f"{name} is set but this run has no such model (its models: {sorted(models)}): ignored"
            for name in sorted(environ) if name.startswith("MNV2BENCH_WEIGHTS_") and name not in wanted]


def parse_weights_override(text: str) -> tuple[str, str]:
    """``MODEL=SPEC`` from ``--weights``."""
    model, sep, spec = text.partition("=")
    if not sep or not spec:
        raise ConfigError(f"bad --weights {text!r}: use MODEL=imagenet|none|pretext|PATH")
    return model, spec


def resolve_weights_spec(model: str, profile_spec: str, overrides: dict[str, str]) -> WeightsSource:
    """Option beats environment variable beats profile."""
    return parse_weights(overrides.get(model) or os.environ.get(weights_env_var(model)) or profile_spec)


def load_pretrained_state(spec: ModelSpec | str, source: WeightsSource) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The network's state dict and its provenance, for ``imagenet`` and file sources."""
    spec = spec_of(spec)
    if source.kind == "file":
        return _load_file(spec, source.path)
    if source.kind == "imagenet":
        return _load_timm(spec) if spec.source == "timm" else _load_torchvision(spec)
    raise ValueError(f"{source.kind} weights are not loaded from disk")


def _load_file(spec: ModelSpec, path: Path) -> tuple[dict, dict]:
    model = spec.name
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file {path} for {model} does not exist; fix the path given by --weights "
            f"{model}=PATH or {weights_env_var(model)}, or use {model}=none / imagenet"
        )
    sha = file_sha256(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's weights-only message runs to a page: the kind of failure says enough
        raise WeightsUnavailableError(f"weights file {path} for {model} cannot be read as a tensor state dict "
                                      f"({type(exc).__name__}); save one with torch.save(model.state_dict(), PATH) "
                                      f"(pickled objects other than tensors are refused)") from None
    state = _unwrapped(state, spec, path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path} does not hold a state dict of tensors")
    note, stand_in = KNOWN_FILES.get(sha, ("local weights file", False))
    return state, {"model": model, "source": f"file:{path.name}", "sha256": sha, "stand_in": stand_in, "note": note}


def _unwrapped(state: Any, spec: ModelSpec, path: Path) -> Any:
    """The state dict a checkpoint holds: under ``checkpoint_key`` and with ``strip_prefix``
    removed from its keys, as the model's table names them; a wrapped or prefixed checkpoint
    whose table does not say so is one line naming the option (never a silent guess)."""
    table = f"[models.{spec.name}]"
    if spec.checkpoint_key:
        if not isinstance(state, dict) or spec.checkpoint_key not in state:
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise WeightsUnavailableError(f"{path} has no {spec.checkpoint_key!r} entry ({table} checkpoint_key); "
                                          f"its top-level keys: {found}")
        state = state[spec.checkpoint_key]
    elif isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        nested = [k for k, v in state.items() if isinstance(v, dict) and v
                  and all(isinstance(t, torch.Tensor) for t in v.values())]
        if nested:
            raise WeightsUnavailableError(f"{path} wraps its state dict under {nested[0]!r}: add checkpoint_key = "
                                          f"\"{nested[0]}\" to {table}")
    if spec.strip_prefix and isinstance(state, dict):
        if not all(k.startswith(spec.strip_prefix) for k in state):
            raise WeightsUnavailableError(f"not every key of {path} starts with {spec.strip_prefix!r} "
                                          f"({table} strip_prefix): e.g. {next(iter(state))!r}")
        state = {k[len(spec.strip_prefix):]: v for k, v in state.items()}
    elif isinstance(state, dict) and state:
        prefix = next(iter(state)).split(".", 1)[0] + "."
        if prefix in ("module.", "_orig_mod.") and all(k.startswith(prefix) for k in state):
            raise WeightsUnavailableError(f"every key of {path} starts with {prefix!r} (saved from a wrapper): add "
                                          f"strip_prefix = \"{prefix}\" to {table}")
    return state


def _load_torchvision(spec: ModelSpec) -> tuple[dict, dict]:
    weights = _torchvision_weights(spec.arch)
    if weights is None:
        raise WeightsUnavailableError(f"torchvision has no pretrained weights for {spec.arch}; give a file: "
                                      f"--weights {spec.name}=PATH, or weights = \"none\"")
    name = f"{type(weights).__name__}.{weights.name}"
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"torchvision {name} could not be loaded ({type(exc).__name__}: {exc}). "
            f"Without network, give a local copy: --weights {spec.name}=PATH or "
            f"{weights_env_var(spec.name)}=PATH (a torchvision {spec.arch} state dict), or train without "
            f"pretrained weights: --weights {spec.name}=none"
        ) from None
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    return state, {"model": spec.name, "source": f"torchvision:{name}",
                   "sha256": file_sha256(file) if file.is_file() else None, "stand_in": False, "note": weights.url}


def _load_timm(spec: ModelSpec) -> tuple[dict, dict]:
    """timm's pretrained weights of ``pretrained_cfg`` (the weights its mean/std are for), else ``arch``."""
    import timm
    arch = spec.pretrained_cfg or spec.arch
    try:
        net = timm.create_model(arch, pretrained=True)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"timm {arch} pretrained weights could not be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:100]}). Without network, give a local copy: --weights {spec.name}=PATH "
            f"(a timm {arch} state dict), or --weights {spec.name}=none") from None
    tag = net.pretrained_cfg.get("hf_hub_id") or net.pretrained_cfg.get("url") or arch
    return net.state_dict(), {"model": spec.name, "source": f"timm:{tag}", "sha256": None, "stand_in": False,
                              "note": f"timm {arch} pretrained weights"}


def random_init_provenance(model: str, note: str = "random initialisation") -> dict[str, Any]:
    return {"model": model, "source": "none", "sha256": None, "stand_in": False, "note": note}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
