import pytest
import torch
from tiny import tiny_splits

from mnv2core import strategies, training
from mnv2core.errors import TrainingDivergedError
from mnv2core.keys import ArtifactKey
from mnv2core.models import build_model
from mnv2core.profiles import TrainConfig
from mnv2core.training import fit

FIT = dict(seed=0, label="test", eval_batch_size=64)


@pytest.fixture(scope="module")
def tiny_data():
    return tiny_splits(64, 32)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_partial_finetune_changes_only_the_head(tiny_data):
    model = build_model("mobilenet_v2", 10)
    before = snapshot(model)
    strategies.partial_finetune(model, tiny_data, TrainConfig(epochs=1, batch_size=16, lr=1e-2), **FIT)
    moved = changed(before, snapshot(model))
    assert moved == {"net.classifier.1.weight", "net.classifier.1.bias"}
    assert all(not p.requires_grad for p in model.feature_parameters())


def test_partial_finetune_keeps_frozen_batch_norm_with_recalibration(tiny_data):
    model = build_model("resnet50", 10)
    before = snapshot(model)
    cfg = TrainConfig(epochs=1, batch_size=16, bn_recalibration_images=32)
    strategies.partial_finetune(model, tiny_data, cfg, **FIT)
    assert changed(before, snapshot(model)) == {"net.fc.weight", "net.fc.bias"}


def test_full_finetune_trains_every_layer(tiny_data):
    model = build_model("mobilenet_v2", 10)
    for p in model.feature_parameters():
        p.requires_grad_(False)  # as left by a partial fine-tune
    before = snapshot(model)
    strategies.full_finetune(model, tiny_data, TrainConfig(epochs=1, batch_size=16, lr=1e-3), **FIT)
    moved = changed(before, snapshot(model))
    assert "net.features.0.0.weight" in moved and "net.classifier.1.weight" in moved


def test_distill_trains_student_and_leaves_teacher_alone(tiny_data):
    teacher, student = build_model("resnet50", 10), build_model("mobilenet_v2", 10)
    teacher_before, student_before = snapshot(teacher), snapshot(student)
    cfg = TrainConfig(epochs=1, batch_size=16, temperature=4.0, alpha=0.9)
    history = strategies.distill(student, teacher, tiny_data, cfg, **FIT)
    assert not changed(teacher_before, snapshot(teacher))
    assert changed(student_before, snapshot(student))
    # the history records the trained student's own test accuracy
    assert len(history) == 1 and history[0].test_accuracy == training.evaluate(student, tiny_data.test, 64)


def test_history_has_one_entry_per_epoch(tiny_data):
    model = build_model("mobilenet_v2", 10)
    history = strategies.train_from_scratch(model, tiny_data, TrainConfig(epochs=2, batch_size=32), **FIT)
    assert [h.epoch for h in history] == [1, 2]
    assert all(h.images_per_second > 0 and h.train_loss > 0 for h in history)


def test_train_images_trains_on_a_seeded_draw_of_that_many_images(tiny_data):
    rates = []
    for count in (0, 24, 24):
        torch.manual_seed(0)
        model = build_model("mobilenet_v2", 10)
        cfg = TrainConfig(epochs=1, batch_size=8, augment=False, train_images=count)
        history = strategies.train_from_scratch(model, tiny_data, cfg, **FIT)
        rates.append((history[0].train_loss, history[0].test_accuracy))
    assert len(tiny_data.train) == 64
    assert rates[1] == rates[2] != rates[0]  # the same draw each time; not the whole set
    subset = training.with_training_subset(tiny_data, TrainConfig(epochs=1, batch_size=8, train_images=24), 0)
    assert len(subset.train) == 24 and len(subset.test) == len(tiny_data.test)
    assert set(subset.train.labels.tolist()) <= set(tiny_data.train.labels.tolist())


def test_nan_loss_raises_a_clear_error(tiny_data):
    model = build_model("mobilenet_v2", 10)

    def nan_loss(m, images, labels):
        return m(images).sum() * float("nan")

    with pytest.raises(TrainingDivergedError,
                       match=r"Lower the learning rate.*then rerun \(nothing of it was cached\)\.$"):
        fit(model, tiny_data, TrainConfig(epochs=1, batch_size=32), params=list(model.parameters()),
            loss_fn=nan_loss, **FIT)


def test_a_rising_loss_stops_training_and_nothing_is_cached(tiny_data, tmp_path):
    from mnv2core.cache import ArtifactCache

    model, steps = build_model("mobilenet_v2", 10), []

    def rising_loss(m, images, labels):  # as an lr far too high: every step worse than the last
        steps.append(1)
        return torch.nn.functional.cross_entropy(m(images), labels) * len(steps) ** 2

    def build():
        fit(model, tiny_data, TrainConfig(epochs=5, batch_size=32, lr=1e-6), params=list(model.parameters()),
            loss_fn=rising_loss, **FIT)
        return {"weights": torch.zeros(1)}

    cache = ArtifactCache(tmp_path)
    with pytest.raises(TrainingDivergedError, match=r"test: the training loss rose from .* in epoch 2.*now 1e-06"):
        cache.fetch(ArtifactKey("diverging", "toy", {}, "code"), build)
    assert len(steps) == 4 and not list(tmp_path.glob("*.pt"))


def test_recalibration_sets_statistics_from_data(tiny_data):
    model = build_model("mobilenet_v2", 10)
    first_bn = model.net.features[0][1]
    from mnv2core.training import recalibrate_batch_norm
    recalibrate_batch_norm(model, tiny_data.train, 64, 32)
    with torch.no_grad():
        conv_out = model.net.features[0][0](model.normalize(tiny_data.train.images.float() / 255))
    expected_mean = conv_out.mean(dim=(0, 2, 3))
    assert torch.allclose(first_bn.running_mean, expected_mean, atol=1e-4)
    assert first_bn.momentum == 0.1


def test_adam_at_an_absurd_learning_rate_is_caught_in_its_first_epoch(tiny_data):
    """Adam at lr 1000: the loss falls from the hundreds (chance is ln 10 = 2.3), which no
    rising-loss check sees; against the first step's loss it is caught in epoch 1."""
    model = build_model("mobilenet_v2", 10)
    cfg = TrainConfig(epochs=1, batch_size=16, optimizer="adam", lr=1000.0)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1.*first step.*Lower the learning rate \(now 1000"):
        strategies.train_from_scratch(model, tiny_data, cfg, **FIT)


def test_a_fine_tuning_that_starts_from_a_good_model_is_not_taken_for_divergence(tiny_data):
    """A first step at loss 0.03 (the start already fits) and an epoch averaging 0.39: more
    than ten times the first step, but far below any diverging loss."""
    model, steps = build_model("mobilenet_v2", 10), []

    def settling_loss(m, images, labels):
        steps.append(1)
        return m(images).sum() * 0 + (0.03 if len(steps) == 1 else 0.75)

    history = fit(model, tiny_data, TrainConfig(epochs=2, batch_size=32), params=list(model.parameters()),
                  loss_fn=settling_loss, **FIT)
    assert len(history) == 2 and history[0].train_loss > 10 * 0.03
