"""The harness's own speed: its training step and evaluation against a plain PyTorch eager
loop (NCHW fp32), back to back in one process, at the dataset's input size (nothing cached:
the speed is of this run, on this machine)."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..context import Artifact, Case, Context
from ..deploy.latency import torch_threads
from ..metrics import info, rate, speedup
from ..models import build_model
from ..registry import MEASUREMENT, Technique, present, register, register_study, require
from ..speed import compare_speed
from ..weights import random_init_provenance

MODEL = "mobilenet_v2"
# images per timed round; threads 0: the run's; the case fails if the harness trains slower
# than min_train_speedup x the plain loop
register_study("speed", {"train_images": 256, "eval_images": 512, "rounds": 3, "threads": 0, "min_train_speedup": 1.0})


def subject(ctx: Context, case: Case) -> Artifact:
    """The measured model, uncached: MobileNetV2 at random init."""
    cfg = ctx.profile.train_config(case.technique, case.dataset)
    size = ctx.input_size(case.dataset, case.technique)
    meta = {"input_size": size, "train": dataclasses.asdict(cfg), "weights": random_init_provenance(MODEL),
            "record": {"derived": case.method}}
    return Artifact(build_model(MODEL, ctx.dataset(case.dataset).num_classes), None, "measured", meta)


def measure(ctx: Context, case: Case, artifact: Artifact) -> dict[str, Any]:
    cfg = ctx.profile.train_config(case.technique, case.dataset)
    p = ctx.profile.studies["speed"]
    data = ctx.data_at(case.dataset, artifact.meta["input_size"])
    train = data.train.cycled(p["train_images"] - p["train_images"] % cfg.batch_size or cfg.batch_size)
    test = data.test.cycled(p["eval_images"])
    with torch_threads(p["threads"] or torch.get_num_threads()):
        measured = compare_speed(MODEL, data.num_classes, train, test, cfg, ctx.execution, ctx.profile.eval_batch_size,
                                 p["rounds"], ctx.seed_for(case.dataset, case.technique))
    return {**measured, "input_size": artifact.meta["input_size"], "train_speedup_required": p["min_train_speedup"]}


METRICS = (
    rate("images_per_second.*", "images per second of each loop (reference: plain PyTorch; harness)"),
    speedup("speedup.*", "harness rate over the plain loop's"),
    info("train_speedup_required", "x", "the profile's min_train_speedup"),
    info("train_images_per_round", "count"), info("eval_images_per_round", "count"), info("rounds", "count"),
    info("batch_size", "count"), info("eval_batch_size", "count"), info("threads", "count"),
    info("reference", "text", "what the plain loop is"),
)


def check(m: dict, case: Case) -> None:
    rates = m["images_per_second"]
    require(set(rates) == {f"{side}_{kind}_images_per_second" for side in ("reference", "harness")
                           for kind in ("train", "eval")} and all(rate > 0 for rate in rates.values()),
            f"speeds missing: {rates}")
    require(m["speedup"]["train_speedup"] >= m["train_speedup_required"],
            f"the harness trains at {m['speedup']['train_speedup']:.2f}x the plain loop, below the profile's "
            f"min_train_speedup {m['train_speedup_required']}")


def rows(found) -> list[dict]:
    rows = []
    for _, m in found:
        rate = m["images_per_second"]
        # evaluation batches: the profile's for the plain loop, capped on a CPU for the harness
        for kind, what in (("train", f"batch {m['batch_size']}"), ("eval", "profile's batch")):
            rows.append({"what": f"{kind} {m['input_size']} px, {what}",
                         "plain loop img/s": f"{rate[f'reference_{kind}_images_per_second']:.0f}",
                         "harness img/s": f"{rate[f'harness_{kind}_images_per_second']:.0f}",
                         "harness / plain": f"{m['speedup'][f'{kind}_speedup']:.2f}x", "threads": m["threads"]})
    return rows


register(Technique("train_speed", MEASUREMENT, "Harness speed vs a plain PyTorch loop", study="speed", model=MODEL,
                   subject=subject, measure=measure, check=check, floored=False,
                   metrics=METRICS))
present("train_speed", table=("Harness speed against a plain PyTorch loop (NCHW fp32; median of alternating rounds)",
                      rows))
