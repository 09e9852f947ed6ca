"""Light digit classifiers (the MNIST companion study): small CNNs against an MLP and a
LeNet-style CNN with a large fully connected layer, trained from random init; accuracy,
parameters and CPU latency per batch."""
from __future__ import annotations

from typing import Any

from ..building import Trained, plain
from ..context import Artifact, Case, Context
from ..deploy.latency import eager_latency
from ..metrics import CPU_SHARE, info, ms
from ..registry import TRAINED, Table, Technique, only, register, register_study, register_table, require
from ..strategies import train_from_scratch

STUDY = "light"
register_study(STUDY, {"batch_sizes": [1, 64], "warmup": 5, "rounds": 50, "threads": 1})
MODELS = {  # technique -> (model, title)
    "light_cnn": ("lightcnn", "LightCNN"),
    "light_mlp": ("mlp", "MLP 784-512-256-10"),
    "light_lenet": ("lenet", "LeNet-style CNN (large FC)"),
    "light_ultra": ("ultralight", "Ultra-light CNN"),
    "light_medium": ("mediumlight", "Medium-light CNN"),
}
MLP_PARAMETERS = 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10  # the study's 784-512-256-10


def measure(ctx: Context, case: Case, artifact: Artifact) -> dict[str, Any]:
    p = ctx.profile.studies[STUDY]
    timed = eager_latency({"eager_fp32": artifact.model}, artifact.meta["input_size"], p["batch_sizes"],
                          p["warmup"], p["rounds"], p["threads"], ctx.timer)
    return {**timed, "threads": p["threads"], "rounds": p["rounds"]}


def check(m: dict, case: Case) -> None:
    if case.model == "mlp":
        require(m["parameters"] == MLP_PARAMETERS, f"the MLP has {m['parameters']} parameters, not {MLP_PARAMETERS}")
    require(bool(m["latency"]) and all(value > 0 for value in m["latency"].values()), f"latency missing: {m['latency']}")


def rows(found) -> list[dict]:
    rows = []
    for technique in MODELS:
        m = only(found, technique)
        if "accuracy" not in m:
            continue
        row = {"model": technique.removeprefix("light_"), "params": f"{m['parameters']:,}",
               "test acc": f"{m['accuracy']:.4f}"}
        row.update({f"CPU ms, batch {key.split('_b')[1].removesuffix('_ms')}": f"{value:.3f}"
                    for key, value in m.get("latency", {}).items()})
        rows.append(row)
    return rows


METRICS = (ms("latency.eager_fp32_b*_ms", "median ms per batch, eager PyTorch fp32"),
           info("latency_iqr.*", "ms", "interquartile range of the rounds"), CPU_SHARE, info("threads", "count"),
           info("rounds", "count"))
for name, (model, title) in MODELS.items():
    register(Technique(name, TRAINED, title, study=STUDY, model=model,
                       builder=Trained(plain(train_from_scratch), tags={"study": STUDY}), measure=measure, check=check,
                       metrics=METRICS))
register_table(Table("Light models on digits: size, accuracy, CPU latency (1 thread, median)", tuple(MODELS), rows))
