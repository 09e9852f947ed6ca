"""Knowledge distillation: a teacher (``[techniques.kd] teacher``: trained from scratch,
fine-tuned from pretrained weights, or a ready-trained model briefly fine-tuned, by its
[models] entry), a student from random init trained against it (Hinton), and the same
student trained without the teacher as the control."""
from __future__ import annotations

from .. import strategies
from ..building import Trained, plain
from ..context import Case, Context
from ..errors import ConfigError
from ..registry import TRAINED, Technique, present, register, register_study

STUDY = "distillation"
register_study(STUDY)
DEFAULT_STUDENT, DEFAULT_TEACHER = "mobilenet_v2", "resnet50"  # the study's pairing


def kd_model(role: str, default: str):
    """(profile, dataset) -> the kd recipe's ``role`` model on that dataset."""
    def model(profile, dataset: str) -> str:
        if "kd" not in profile.techniques:
            return default
        return getattr(profile.train_config("kd", dataset), role) or default
    return model


def same_size_as_the_teacher(ctx: Context, case: Case) -> None:
    teacher_size, size = ctx.input_size(case.dataset, "teacher"), ctx.input_size(case.dataset, case.technique)
    if teacher_size != size:
        raise ConfigError(f"{case.dataset}: the teacher trains at {teacher_size} px but {case.technique} "
                          f"at {size} px; give both the same 'input' (or 'size') in the profile")


def distilling(ctx: Context, dataset: str):
    """Training against the dataset's teacher: kd's strategy, and its compressed models' retraining."""
    teacher = ctx.artifact(dataset, "teacher").model
    return lambda model, data, cfg, **kw: strategies.distill(model, teacher, data, cfg, **kw)


teacher_model, student_model = kd_model("teacher", DEFAULT_TEACHER), kd_model("student", DEFAULT_STUDENT)
register(Technique("teacher", TRAINED, "Teacher", study=STUDY, model=teacher_model,
                   builder=Trained(plain(strategies.train_all), pretrained=True), starts_early=True))
register(Technique("scratch", TRAINED, "From scratch (no KD)", study=STUDY, model=student_model,
                   builder=Trained(plain(strategies.train_from_scratch))))
register(Technique("kd", TRAINED, "Distillation", study=STUDY, model=student_model,
                   builder=Trained(lambda ctx, case: distilling(ctx, case.dataset),
                                   precondition=same_size_as_the_teacher),
                   needs=("teacher",), retrain=distilling))
present("kd", summary_row="Distillation")
