"""Fine-tuning of each of a dataset's models (``models = [...]``): partial (a new classifier
on the frozen pretrained backbone) and full (everything unfrozen after it, with a small
learning rate) for a model pretrained elsewhere; a model whose weights are already trained
for the dataset (``trained = true``, or an ONNX file) is scored as it is (``ready``), or after
a short fine-tune of every layer when its recipe has epochs (e.g. to adapt to a JPEG copy; an
ONNX file never trains)."""
from __future__ import annotations

from .. import strategies
from ..building import Trained, head_only, plain
from ..registry import TRAINED, Technique, present, register, register_study

register_study("mobilenet")


def fine_tune_if_asked(model, data, cfg, **fit_args) -> list:
    """Every layer trained for the recipe's epochs; none (the weights as they are) at 0."""
    return strategies.full_finetune(model, data, cfg, **fit_args) if cfg.epochs else []


def pretrained_elsewhere(spec) -> bool:
    return not spec.trained


def trained_for_the_dataset(spec) -> bool:
    return spec.trained


register(Technique("partial_ft", TRAINED, "Partial Tuning", per_model=pretrained_elsewhere,
                   builder=Trained(head_only, pretrained=True)))
present("partial_ft", summary_row="Partial Tuning")
register(Technique("full_ft", TRAINED, "Full Fine-Tuning", per_model=pretrained_elsewhere,
                   builder=Trained(plain(strategies.full_finetune), start="partial_ft"), needs=("partial_ft",)))
present("full_ft", summary_row="Full Fine-Tuning")
register(Technique("ready", TRAINED, "Ready-trained", per_model=trained_for_the_dataset,
                   builder=Trained(plain(fine_tune_if_asked), pretrained=True), min_epochs=0, takes_onnx=True))
