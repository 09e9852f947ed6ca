"""Knowledge distillation: a ResNet-50 teacher (pretrained when the profile has weights), a
MobileNetV2 student from random init trained against it (Hinton), and the same student
trained without the teacher as the control."""
from __future__ import annotations

from .. import strategies
from ..building import train_artifact
from ..context import Artifact, Case, Context
from ..errors import ConfigError
from ..registry import TRAINED, Technique, register

STUDENT, TEACHER = "mobilenet_v2", "resnet50"


def build_teacher(ctx: Context, case: Case) -> Artifact:
    return train_artifact(ctx, case, strategies.train_all, pretrained=True)


def build_scratch(ctx: Context, case: Case) -> Artifact:
    return train_artifact(ctx, case, strategies.train_from_scratch)


def build_kd(ctx: Context, case: Case) -> Artifact:
    teacher = ctx.artifact(case.dataset, "teacher")
    size = ctx.input_size(case.dataset, case.technique)
    if teacher.meta["input_size"] != size:
        raise ConfigError(f"{case.dataset}: the teacher trains at {teacher.meta['input_size']} px but {case.technique} "
                          f"at {size} px; give both the same 'input' (or 'size') in the profile")
    return train_artifact(ctx, case, distilling(ctx, case.dataset), upstream={"teacher": teacher.key})


def distilling(ctx: Context, dataset: str):
    """Training against the dataset's teacher: kd's strategy, and its compressed models' retraining."""
    teacher = ctx.artifact(dataset, "teacher").model
    return lambda model, data, cfg, **kw: strategies.distill(model, teacher, data, cfg, **kw)


register(Technique("teacher", TRAINED, "Teacher", model=TEACHER, build=build_teacher, starts_early=True))
register(Technique("scratch", TRAINED, "From scratch (no KD)", model=STUDENT, build=build_scratch))
register(Technique("kd", TRAINED, "Distillation", model=STUDENT, build=build_kd, needs=("teacher",),
                   retrain=distilling))
