"""Recipes that hold on data nobody tuned them on: the best of the start and every epoch,
chosen on a validation split carved from the training images (the test split selects
nothing), a warmed-up lr and batch-norm statistics kept for a gentle first unfrozen epoch."""
import dataclasses

import torch
from tiny import lr_at_each_step
from torch import nn

from mnv2core.datasets import DatasetSplits
from mnv2core.datasets.tensors import FeatureSet
from mnv2core.profiles import TrainConfig
from mnv2core.training import ended_accuracy, evaluate, fit, make_optimizer, make_schedule, with_training_subset

CLASSES = 4


def fine_grained(count: int, seed: int, spread: float = 0.8) -> FeatureSet:
    """Classes whose means differ little against their spread: a linear head gets most right,
    a careless update loses it."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % CLASSES
    means = torch.eye(CLASSES, 8)
    return FeatureSet(means[labels] + spread * torch.randn(count, 8, generator=generator), labels)


def splits(test_labels: torch.Tensor | None = None) -> DatasetSplits:
    test = fine_grained(400, seed=2)
    if test_labels is not None:
        test = FeatureSet(test.features, test_labels)
    return DatasetSplits("fine", fine_grained(800, seed=1), test, tuple("abcd"), {})


def trained_head() -> nn.Linear:
    torch.manual_seed(0)
    head = nn.Linear(8, CLASSES)
    fit(head, splits(), TrainConfig(epochs=5, batch_size=32, lr=0.05, augment=False), params=list(head.parameters()),
        seed=0, label="start", eval_batch_size=256)
    return head


def started_head(state: dict) -> nn.Linear:
    head = nn.Linear(8, CLASSES)
    head.load_state_dict(state)
    return head


def run(head: nn.Module, cfg: TrainConfig, data: DatasetSplits | None = None):
    return fit(head, data or splits(), cfg, params=list(head.parameters()), seed=3, label="ft", eval_batch_size=256)


HARSH = TrainConfig(epochs=3, batch_size=32, optimizer="sgd", lr=10.0, momentum=0.0, augment=False)


def test_a_training_that_only_hurts_ends_with_the_weights_it_started_from():
    start = trained_head()
    started = {k: v.clone() for k, v in start.state_dict().items()}
    careless = trained_head()
    no_validation = [h.as_dict() for h in run(careless, HARSH)]
    assert evaluate(careless, splits().test, 256) < evaluate(start, splits().test, 256) - 0.05  # it does hurt
    assert ended_accuracy(no_validation, 1.0) == evaluate(careless, splits().test, 256)  # the last epoch's

    history = run(start, dataclasses.replace(HARSH, validation_fraction=0.25))
    assert all(h.val_accuracy is not None for h in history) and not any(h.kept for h in history)
    assert all(torch.equal(started[k], v) for k, v in start.state_dict().items())
    records, before = [h.as_dict() for h in history], evaluate(started_head(started), splits().test, 256)
    assert ended_accuracy(records, before) == before == evaluate(start, splits().test, 256)
    assert ended_accuracy(records, before) != records[-1]["test_accuracy"]  # not the last epoch's


def test_the_kept_epoch_is_the_best_on_validation_and_the_test_labels_change_nothing():
    cfg = TrainConfig(epochs=6, batch_size=32, optimizer="sgd", lr=2.0, momentum=0.9, augment=False,
                      validation_fraction=0.25)
    torch.manual_seed(1)
    first = nn.Linear(8, CLASSES)
    second = nn.Linear(8, CLASSES)
    second.load_state_dict(first.state_dict())
    history = run(first, cfg)
    kept = [h for h in history if h.kept]
    assert len(kept) == 1 and kept[0].val_accuracy == max(h.val_accuracy for h in history)
    assert kept[0] != history[-1] and kept[0].as_dict()["kept"] and "kept" not in history[-1].as_dict()
    validation = with_training_subset(splits(), cfg, seed=3).validation  # the split fit carves
    assert evaluate(first, validation, 256) == kept[0].val_accuracy  # the kept epoch's weights, restored
    assert ended_accuracy([h.as_dict() for h in history], 0.0) == evaluate(first, splits().test, 256)
    assert ended_accuracy([h.as_dict() for h in history], 0.0) != history[-1].test_accuracy

    shuffled = splits().test.labels[torch.randperm(400, generator=torch.Generator().manual_seed(9))]
    again = run(second, cfg, splits(test_labels=shuffled))
    assert [h.kept for h in again] == [h.kept for h in history]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True))


def test_warm_up_raises_the_lr_from_a_hundredth_over_its_epochs_then_the_schedule_runs():
    head = nn.Linear(8, CLASSES)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.1, warmup_epochs=1, schedule="cosine")
    optimizer = make_optimizer(head.parameters(), cfg)
    lrs = lr_at_each_step(optimizer, make_schedule(optimizer, cfg, total_steps=12, steps_per_epoch=4), 12)
    assert abs(lrs[0] - 0.001) < 1e-9 and lrs[:4] == sorted(lrs[:4])  # rising from a hundredth
    assert abs(lrs[4] - 0.1) < 1e-9 and lrs[4:] == sorted(lrs[4:], reverse=True)  # then cosine from the full lr


def test_batch_norm_statistics_stay_as_they_started_when_kept():
    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, CLASSES))

    kept, moving = model(), model()
    before = kept[1].running_mean.clone()
    cfg = TrainConfig(epochs=1, batch_size=32, augment=False)
    run(kept, dataclasses.replace(cfg, bn_frozen=True))
    run(moving, cfg)
    assert torch.equal(kept[1].running_mean, before) and not torch.equal(moving[1].running_mean, before)
    assert not torch.equal(kept[1].weight, model()[1].weight)  # its affine weights still train


def test_every_technique_on_a_dataset_validates_on_the_same_images_none_of_them_trains_on():
    """A full fine-tuning must not validate on images its partial fine-tuned start was trained
    on (drawn by each technique's seed, its start scored 0.68 on a split where it had scored
    0.64, and the start was kept): the split is one draw per dataset, made before any
    technique draws its training subset."""
    data = DatasetSplits("fine", FeatureSet(torch.arange(800.0).unsqueeze(1), torch.arange(800) % CLASSES),
                         fine_grained(40, seed=2), tuple("abcd"), {})
    cfg = TrainConfig(epochs=1, batch_size=32, validation_fraction=0.1, train_images=300)
    partial, full = with_training_subset(data, cfg, seed=11), with_training_subset(data, cfg, seed=22)
    assert torch.equal(partial.validation.features, full.validation.features) and len(partial.validation) == 80
    held = set(partial.validation.features.flatten().tolist())
    for trained in (partial, full):
        assert len(trained.train) == 300 and not held & set(trained.train.features.flatten().tolist())
    assert with_training_subset(partial, cfg, seed=11) == partial  # applied again: nothing changes
