"""Training and evaluation speed of the harness against a plain PyTorch loop, timed back to
back in one process: rounds alternate between the two, and each side's images/s is the
median of its rounds, so drift in the machine's speed hits both alike. The gate tracks the
ratios (``*_speedup``), which stay meaningful across machines; absolute rates do not."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .datasets import ImageSet, eval_batches, train_batches
from .execution import Execution, default_allocator
from .models import build_model
from .profiles import TrainConfig
from .training import cross_entropy_loss, evaluate, make_optimizer, train_one_epoch

REFERENCE = ("plain PyTorch eager loop: NCHW fp32, torch.optim.SGD (momentum 0.9), no autocast, "
             "glibc's default allocator thresholds")


def reference_train_round(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: ImageSet,
                          batch_size: int) -> None:
    """What a user writes first: NCHW float batches, forward, cross-entropy, backward, step."""
    model.train()
    for start in range(0, len(images), batch_size):
        x = images.images[start:start + batch_size].float() / 255
        loss = F.cross_entropy(model(x), images.labels[start:start + batch_size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def reference_eval_round(model: torch.nn.Module, images: ImageSet, batch_size: int) -> None:
    model.eval()
    for x, _ in eval_batches(images, batch_size):
        model(x).argmax(1)


def compare_speed(model_name: str, num_classes: int, train: ImageSet, test: ImageSet, cfg: TrainConfig,
                  execution: Execution, eval_batch_size: int, rounds: int, seed: int) -> dict:
    """Images/s of the reference loop and of the harness (its training step and its
    evaluation, with ``execution``'s settings), and the harness's speed-ups over the reference."""
    torch.manual_seed(seed)
    reference = build_model(model_name, num_classes)
    harness = execution.prepare(build_model(model_name, num_classes))
    harness.load_state_dict(reference.state_dict())
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=cfg.lr, momentum=0.9)
    harness_optimizer = make_optimizer(harness.parameters(), cfg)
    generator = torch.Generator().manual_seed(seed)

    def harness_train() -> None:
        harness.train()
        batches = train_batches(train, cfg.batch_size, cfg.augment, generator)
        train_one_epoch(harness, batches, harness_optimizer, None, cross_entropy_loss, execution)[0].item()

    def reference_train() -> None:
        with default_allocator():
            reference_train_round(reference, reference_optimizer, train, cfg.batch_size)

    def reference_eval() -> None:
        with default_allocator():
            reference_eval_round(reference, test, eval_batch_size)

    timed = {
        "reference_train": (reference_train, _usable(train, cfg.batch_size)),
        "harness_train": (harness_train, _usable(train, cfg.batch_size)),
        "reference_eval": (reference_eval, len(test)),
        "harness_eval": (lambda: evaluate(harness, test, eval_batch_size, execution), len(test)),
    }
    rates = _alternating_rates(timed, rounds)
    return {
        "images_per_second": {f"{name}_images_per_second": rate for name, rate in rates.items()},
        "speedup": {"train_speedup": rates["harness_train"] / rates["reference_train"],
                    "eval_speedup": rates["harness_eval"] / rates["reference_eval"]},
        "train_images_per_round": _usable(train, cfg.batch_size), "eval_images_per_round": len(test),
        "rounds": rounds, "batch_size": cfg.batch_size, "eval_batch_size": eval_batch_size,
        "threads": torch.get_num_threads(), "reference": REFERENCE,
    }


def _usable(images: ImageSet, batch_size: int) -> int:
    return max(len(images) - len(images) % batch_size, min(len(images), batch_size))


def _alternating_rates(timed: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, float]:
    """One untimed warm-up round each, then ``rounds`` rounds of every job in turn; the
    median images/s of each."""
    for run, _ in timed.values():
        run()
    seconds = {name: [] for name in timed}
    for _ in range(rounds):
        for name, (run, _) in timed.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return {name: count / statistics.median(seconds[name]) for name, (_, count) in timed.items()}
