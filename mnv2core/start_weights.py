"""Where a model's training starts: the weights its profile entry names (a state-dict file,
the library's ImageNet weights, or the harness's pretext weights, trained once through the
cache as the offline stand-in for ImageNet pretraining), or random initialisation; and what
identifies them in a cache key, known before anything is loaded or trained."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from . import strategies
from .cache import ArtifactCache, payload_digest
from .datasets import DatasetSplits
from .datasets.sources import read_synthetic
from .errors import WeightsUnavailableError
from .execution import Execution
from .fingerprint import code_fingerprint
from .keys import ArtifactKey
from .models import ImageClassifier, build_model, from_pretrained
from .profiles import Profile, TrainConfig
from .seeding import derive_seed, rng_preserved, seed_everything
from .weights import file_sha256, load_pretrained_state, random_init_provenance, resolve_weights_spec, weights_env_var

NO_PRETRAINED_NOTE = "no pretrained weights: the network starts from random initialisation"
PRETEXT_PALETTE_OFFSET = 0.5
PRETEXT_SEED_OFFSET = 1000


class StartWeights:
    """The starting weights of a study's models, loaded (or, for pretext weights, built) once
    per process; ``overrides``: the run's ``--weights`` (model -> path)."""

    def __init__(self, profile: Profile, overrides: dict[str, str], cache: ArtifactCache, execution: Execution,
                 device: torch.device):
        self.profile = profile
        self.overrides = overrides
        self.cache = cache
        self.execution = execution
        self.device = device
        self._loaded: dict[tuple, tuple[dict | None, dict]] = {}
        self._file_digests: dict[Path, str] = {}

    def model(self, model_name: str, num_classes: int, size: int,
              pretrained: bool) -> tuple[ImageClassifier, dict[str, Any]]:
        """A fresh model and its weights provenance: the profile's weights when ``pretrained``
        (with a new head, or their own for a ready-trained model), else random."""
        spec = self.profile.model(model_name)
        if spec.deploy_only:  # an ONNX file: its weights are in it
            model = build_model(spec, num_classes)
            model.net.check_input_size(size)
            return model, self._file_provenance(model_name)
        state, provenance = self._pretrained_state(model_name, size) if pretrained else (None, None)
        if state is None:
            return build_model(spec, num_classes), provenance or random_init_provenance(model_name)
        return from_pretrained(spec, state, num_classes, keep_head=spec.trained), provenance

    def fingerprint(self, model_name: str, size: int, pretrained: bool) -> dict | ArtifactKey | None:
        """What identifies the starting weights: a weights file's sha256, or the key of the
        harness's pretext weights (known without training them, so a plan has every key
        before anything runs)."""
        if not pretrained:
            return None
        if self.profile.model(model_name).deploy_only:
            provenance = self._file_provenance(model_name)
            return {"source": provenance["source"], "sha256": provenance["sha256"]}
        if self._weights_source(model_name).kind == "pretext":
            return self.pretext_key(model_name, size)
        _, provenance = self._pretrained_state(model_name, size)
        return {"source": provenance["source"], "sha256": provenance["sha256"]}

    def _file_provenance(self, model_name: str) -> dict[str, Any]:
        """A deploy-only model's: its file, named by its last path component and sha256 (hashed
        once per process: keying and building both ask)."""
        path = Path(self.profile.model(model_name).arch)
        if path not in self._file_digests:
            self._file_digests[path] = file_sha256(path)
        return {"model": model_name, "source": f"onnx:{path.name}", "sha256": self._file_digests[path],
                "stand_in": False, "note": "the user's ONNX file, deployed as it is"}

    def _weights_source(self, model_name: str):
        return resolve_weights_spec(model_name, self.profile.model(model_name).weights, self.overrides)

    def _pretrained_state(self, model_name: str, size: int) -> tuple[dict | None, dict]:
        spec = self.profile.model(model_name)
        source = self._weights_source(model_name)
        if source.kind == "none":
            if spec.trained:
                raise WeightsUnavailableError(
                    f"{model_name} is marked trained for the dataset but has no weights: give its file with "
                    f"--weights {model_name}=PATH or {weights_env_var(model_name)}=PATH")
            return None, random_init_provenance(model_name, NO_PRETRAINED_NOTE)
        if source.kind == "pretext":
            return self.pretext_state(model_name, size)
        memo_key = ("pretrained", model_name, source)
        if memo_key not in self._loaded:
            self._loaded[memo_key] = load_pretrained_state(spec, source)
        return self._loaded[memo_key]

    def pretext_key(self, model_name: str, size: int) -> ArtifactKey:
        """The key of the pretext weights for ``model_name`` at ``size``: [pretext] ``size``
        when the profile gives one (one pretext resolution for every input size, as ImageNet
        weights have), else the input size that asks for them."""
        cfg = self._pretext_config()
        size = cfg.size or size
        recipe = {"model": model_name, "network": self.profile.model(model_name).identity(), "size": size,
                  "train": dataclasses.asdict(cfg), "train_size": self.profile.pretext["train_size"],
                  "generator": code_fingerprint("mnv2core.datasets.sources")}
        return ArtifactKey(f"pretext-{model_name}-{size}px", "pretext", recipe, code_fingerprint("mnv2core.strategies"),
                           derive_seed(self.profile.seed, "pretext", model_name, size),
                           target=("pretext", model_name, size))

    def _pretext_config(self) -> TrainConfig:
        return TrainConfig(**{k: v for k, v in self.profile.pretext.items() if k != "train_size"})

    def pretext_state(self, model_name: str, size: int) -> tuple[dict, dict]:
        """Weights trained by the harness on a related synthetic task (hues shifted): the
        offline stand-in for ImageNet pretraining (built once, through the cache)."""
        key = self.pretext_key(model_name, size)
        cfg, size, seed, train_size = self._pretext_config(), key.recipe["size"], key.seed, key.recipe["train_size"]

        def build() -> dict[str, Any]:
            raw = read_synthetic(size, train_size, max(256, train_size // 4),
                                 seed=self.profile.seed + PRETEXT_SEED_OFFSET, palette_offset=PRETEXT_PALETTE_OFFSET)
            splits = DatasetSplits("pretext", raw.train, raw.test, raw.classes, {}).at_size(size, self.device)
            seed_everything(seed)
            model = self.execution.prepare(build_model(self.profile.model(model_name), splits.num_classes))
            strategies.train_from_scratch(model, splits, cfg, seed=seed, label=key.label,
                                          eval_batch_size=self.profile.eval_batch_size, execution=self.execution)
            return {"net_state": {k: v.detach().cpu() for k, v in model.net.state_dict().items()}}

        memo_key = ("pretext", model_name, size)
        if memo_key not in self._loaded:
            with rng_preserved():  # built or loaded, the build asking for them draws alike
                result = self.cache.fetch(key, build)
            state = result.payload["net_state"]
            provenance = {"model": model_name, "source": "pretext:synthetic", "sha256": payload_digest(state),
                          "stand_in": True, "note": "trained by the harness on a synthetic pretext task "
                                                    "(offline stand-in for ImageNet weights)"}
            self._loaded[memo_key] = (state, provenance)
        return self._loaded[memo_key]
