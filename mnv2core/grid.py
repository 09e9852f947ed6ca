"""The benchmark grid: dataset x model x technique."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .profiles import Profile

# technique -> the model it trains
TECHNIQUE_MODELS = {
    "partial_ft": "mobilenet_v2",
    "full_ft": "mobilenet_v2",
    "scratch": "mobilenet_v2",
    "kd": "mobilenet_v2",
    "teacher": "resnet50",
    "vgg_train": "vgg16",
    "vgg_head": "vgg16",
    "vgg_si": "vgg16",
    "light_cnn": "lightcnn",
    "light_mlp": "mlp",
    "light_lenet": "lenet",
    "light_ultra": "ultralight",
    "light_medium": "mediumlight",
    "resnet_head": "resnet18",
    "resnet_lowrank": "resnet18",
    "train_speed": "mobilenet_v2",
}
TECHNIQUE_TITLES = {
    "partial_ft": "Partial Tuning",
    "full_ft": "Full Fine-Tuning",
    "scratch": "From scratch (no KD)",
    "kd": "Distillation",
    "teacher": "Teacher",
    "vgg_train": "VGG16 trained end to end",
    "vgg_head": "VGG16, classifier retrained on frozen features",
    "vgg_si": "VGG16 compressed by separation index",
    "light_cnn": "LightCNN",
    "light_mlp": "MLP 784-512-256-10",
    "light_lenet": "LeNet-style CNN (large FC)",
    "light_ultra": "Ultra-light CNN",
    "light_medium": "Medium-light CNN",
    "resnet_head": "ResNet-18, head on frozen backbone",
    "resnet_lowrank": "ResNet-18, low-rank head",
    "train_speed": "Harness speed vs a plain PyTorch loop",
}


@dataclass(frozen=True)
class Case:
    dataset: str
    model: str
    technique: str

    @property
    def id(self) -> str:
        return f"{self.dataset}-{self.model}-{self.technique}"


def build_grid(profile: Profile, datasets: list[str] | None = None,
               techniques: list[str] | None = None) -> list[Case]:
    """Every (dataset, technique) of the profile, optionally narrowed to some datasets or
    techniques; unknown names raise ConfigError listing the valid ones."""
    chosen_datasets = _choose(datasets, list(profile.datasets), "dataset", profile.name)
    models = technique_models(profile)
    chosen_techniques = _choose(techniques, list(models), "technique", profile.name)
    compressed = {tech for tech, _, _ in profile.compressed_cases()}
    compressed |= {tech for tech, base, _, _ in profile.deployment_cases() if base in compressed}
    return [Case(ds, models[tech], tech) for ds in chosen_datasets for tech in chosen_techniques
            if profile.datasets[ds].runs(tech) and (profile.datasets[ds].compress or tech not in compressed)]


def technique_models(profile: Profile) -> dict[str, str]:
    """Every technique of the profile (trained, then compressed) and the model it yields."""
    models = {tech: TECHNIQUE_MODELS[tech] for tech in profile.techniques}
    models.update({tech: TECHNIQUE_MODELS[base] for tech, base, _ in profile.compressed_cases()})
    models.update({tech: models[base] for tech, base, _, _ in profile.deployment_cases()})
    return models


def _choose(wanted: list[str] | None, available: list[str], kind: str, profile: str) -> list[str]:
    if not wanted:
        return available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ConfigError(f"unknown {kind} {unknown} for profile {profile!r}; choose from {available}")
    return [name for name in available if name in wanted]
