"""Small synthetic data and helpers for the library's unit tests."""
from mnv2core.datasets import DatasetSplits, synthetic


def tiny_splits(train_size: int, test_size: int) -> DatasetSplits:
    """Synthetic 32 px train and test sets (generator seeds 0 and 1)."""
    train, test = synthetic.generate(train_size, 32, seed=0), synthetic.generate(test_size, 32, seed=1)
    return DatasetSplits("tiny", train, test, synthetic.CLASS_NAMES, {})


def lr_at_each_step(optimizer, schedule, steps: int) -> list[float]:
    """The learning rate of each of ``steps`` optimizer steps under ``schedule``."""
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates
