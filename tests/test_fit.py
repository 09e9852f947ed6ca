"""The fit diagnosis: rules over a training history, and the training accuracy fit() records
for it; three real trainings made to order are told apart: an overfitting head (few noisy
training points, many epochs), an underfitting one (three epochs at a tiny lr) and a balanced
one (plenty of clean points)."""
import torch
from torch import nn

from mnv2core.datasets import DatasetSplits
from mnv2core.datasets.tensors import FeatureSet
from mnv2core.fit import diagnose
from mnv2core.profiles import TrainConfig
from mnv2core.report import render_report
from mnv2core.training import FIT_SAMPLE_IMAGES, fit


def history(train, held_out, losses, held_out_key="test_accuracy"):
    return [{"epoch": i + 1, "train_loss": loss, "train_accuracy": t, held_out_key: h}
            for i, (t, h, loss) in enumerate(zip(train, held_out, losses, strict=True))]


def test_a_gap_that_opens_is_overfit_and_names_how_far():
    verdict = diagnose(history([0.70, 0.85, 0.95, 0.99], [0.68, 0.74, 0.75, 0.74], [1.0, 0.5, 0.2, 0.05]))
    assert verdict["verdict"] == "overfit" and verdict["gap"] == 0.99 - 0.74
    assert verdict["reason"] == "training accuracy 25.0 points above held-out, opening by 14.0 points since epoch 2"


def test_a_wide_steady_gap_is_overfit_and_a_narrower_one_when_it_opens_as_held_out_accuracy_falls():
    steady = diagnose(history([0.98, 0.99, 0.97, 0.96], [0.80, 0.86, 0.84, 0.83], [0.2, 0.1, 0.08, 0.079]))
    assert steady["verdict"] == "overfit"
    assert steady["reason"] == ("training accuracy 13.0 points above held-out, steady, held-out accuracy 3.0 points "
                                "below its best")
    beginning = diagnose(history([0.90, 0.92, 0.95, 0.96], [0.88, 0.90, 0.89, 0.87], [0.4, 0.3, 0.2, 0.15]))
    assert beginning["verdict"] == "overfit" and beginning["gap"] < 0.10


def test_low_training_accuracy_close_to_held_out_is_underfit_and_says_if_the_loss_still_falls():
    falling = diagnose(history([0.40, 0.50, 0.55], [0.41, 0.49, 0.53], [2.0, 1.6, 1.4]))
    assert falling["verdict"] == "underfit" and falling["loss_falling"]
    assert falling["reason"] == "training accuracy 0.550, close to held-out (training loss still falling)"
    flat = diagnose(history([0.40, 0.50, 0.55], [0.41, 0.49, 0.53], [2.0, 1.5, 1.49]))
    assert flat["verdict"] == "underfit" and flat["reason"].endswith("(training loss flat)")


def test_a_high_fit_with_a_small_steady_gap_is_balanced_and_uses_the_validation_split_where_there_is_one():
    verdict = diagnose(history([0.80, 0.88, 0.92], [0.78, 0.86, 0.89], [0.6, 0.4, 0.395], "val_accuracy"))
    assert verdict["verdict"] == "balanced" and verdict["held_out"] == "val"
    assert verdict["reason"] == "gap 3.0 points, steady"


def test_too_few_epochs_or_no_training_accuracy_is_undetermined():
    assert diagnose(history([0.9, 0.95], [0.5, 0.5], [1.0, 0.1])) == {
        "verdict": "undetermined", "reason": "2 epoch(s): a trend needs 3"}
    old = [{"epoch": e, "train_loss": 1.0, "test_accuracy": 0.5} for e in (1, 2, 3)]  # recorded before
    assert diagnose(old)["reason"] == "no training accuracy recorded (a record of older code)"


def blobs(count, seed, noise):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 4
    return FeatureSet(torch.eye(4, 16)[labels] + noise * torch.randn(count, 16, generator=generator), labels)


def trained(train: FeatureSet, cfg: TrainConfig, test_noise: float = 1.2):
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    data = DatasetSplits("blobs", train, blobs(400, seed=9, noise=test_noise), tuple("abcd"), {})
    return [h.as_dict() for h in fit(head, data, cfg, params=list(head.parameters()), seed=0, label="t",
                                      eval_batch_size=256)]


def test_fit_records_training_accuracy_each_epoch_and_three_real_trainings_are_told_apart():
    memorised = trained(blobs(48, seed=1, noise=1.2), TrainConfig(epochs=60, batch_size=8, lr=0.01, augment=False))
    assert all(0 <= e["train_accuracy"] <= 1 for e in memorised) and len(memorised) == 60
    short = trained(blobs(48, seed=1, noise=1.2), TrainConfig(epochs=2, batch_size=8, lr=0.01, augment=False))
    assert not any("train_accuracy" in e for e in short)  # too short for a trend: not scored, no time spent
    assert diagnose(memorised)["verdict"] == "overfit", diagnose(memorised)
    starved = trained(blobs(FIT_SAMPLE_IMAGES * 2, seed=1, noise=1.2),
                      TrainConfig(epochs=3, batch_size=64, optimizer="sgd", lr=1e-3, momentum=0.0, augment=False))
    assert diagnose(starved)["verdict"] == "underfit", diagnose(starved)
    fitted = trained(blobs(1024, seed=1, noise=0.4), TrainConfig(epochs=6, batch_size=32, lr=0.01, augment=False),
                     test_noise=0.4)
    assert diagnose(fitted)["verdict"] == "balanced", diagnose(fitted)


def test_the_report_has_a_fit_row_per_trained_case_and_none_for_a_derived_one():
    from results_factory import document, entry
    epochs = history([0.70, 0.85, 0.95, 0.99], [0.68, 0.74, 0.75, 0.74], [1.0, 0.5, 0.2, 0.05])
    trained_case = entry("ds-mobilenet_v2-full_ft", 0.74, metrics={"epochs": epochs, "fit": diagnose(epochs)})
    derived = entry("ds-mobilenet_v2-full_ft_int8", 0.73, method="int8", base="full_ft", derived="int8",
                    metrics={"epochs": epochs, "fit": diagnose(epochs)})
    text = render_report(document([trained_case, derived]), "md")
    fit_table = text.split("Fit: training against held-out accuracy")[1].split("\n\n")[1]
    assert "| mobilenet_v2-full_ft " in fit_table and "overfit" in fit_table and "+25.0" in fit_table
    assert "full_ft_int8" not in fit_table
