"""Light digit classifiers (the MNIST companion study): small CNNs against an MLP and a
LeNet-style CNN with a large fully connected layer, trained from random init; accuracy,
parameters and CPU latency per batch."""
from __future__ import annotations

from typing import Any

from ..building import train_artifact
from ..context import Artifact, Case, Context
from ..deploy.latency import eager_latency
from ..registry import TRAINED, Technique, register, register_study, require
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


def build(ctx: Context, case: Case) -> Artifact:
    return train_artifact(ctx, case, train_from_scratch, tags={"study": STUDY})


def measure(ctx: Context, case: Case, artifact: Artifact) -> dict[str, Any]:
    p = ctx.profile.studies[STUDY]
    timed = eager_latency({"eager_fp32": artifact.model}, artifact.meta["input_size"], p["batch_sizes"],
                          p["warmup"], p["rounds"], p["threads"], ctx.timer)
    return {**timed, "threads": p["threads"], "rounds": p["rounds"]}


def check(m: dict, case: Case) -> None:
    if case.model == "mlp":
        require(m["parameters"] == MLP_PARAMETERS, f"the MLP has {m['parameters']} parameters, not {MLP_PARAMETERS}")
    require(bool(m["latency"]) and all(value > 0 for value in m["latency"].values()), f"latency missing: {m['latency']}")


for name, (model, title) in MODELS.items():
    register(Technique(name, TRAINED, title, study=STUDY, model=model, build=build, measure=measure, check=check))
