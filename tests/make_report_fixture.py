"""Writes data/results_fixture.json, the input of the report's golden test (run by hand when
the results format changes; then review data/report_golden.md before committing it)."""
import json
from pathlib import Path

from results_factory import document, entry

DATA = {"dataset": "cifar10", "source": "imagefolder", "location": ".data/cifar10", "fingerprint": "f" * 64,
        "native_size": 32, "train_images": 50000, "test_images": 10000, "stand_in": True,
        "note": "read from an image folder instead of torchvision CIFAR10"}
WEIGHTS = {"model": "mobilenet_v2", "source": "file:mobilenet_v2_imagenet_tflite.pth", "sha256": "3b7958144102a8",
           "stand_in": True, "note": "TFLite-converted stand-in for IMAGENET1K_V1"}
HISTORY = [{"epoch": 1, "test_accuracy": 0.612}, {"epoch": 2, "test_accuracy": 0.671}]
GRID = [f"cifar10-{c}" for c in ("mobilenet_v2-partial_ft", "mobilenet_v2-full_ft", "resnet50-teacher",
                                 "mobilenet_v2-scratch", "mobilenet_v2-kd")]


def fixture_document():
    prov = {"data": DATA, "weights": WEIGHTS}
    recipe = {"epochs": 2, "optimizer": "sgd", "lr": 0.05, "schedule": "onecycle", "train_images": 20000}
    entries = [
        entry(GRID[0], 0.671, metrics={"input_size": 96, "parameters": 2236682, "train_seconds": 12.4,
                                       "epochs": HISTORY},
              provenance={**prov, "train": {**recipe, "optimizer": "adam", "lr": 1e-3, "schedule": "constant",
                                            "train_images": 0}}),
        entry(GRID[1], 0.702, outcome="failed", error="below the floor 0.779",
              metrics={"input_size": 96, "parameters": 2236682, "train_seconds": 40.0},
              provenance={**prov, "train": recipe}),
        entry(GRID[2], outcome="skipped", when="setup", error="no GPU"),
        entry(GRID[4], outcome="failed", error="DataNotFoundError: CIFAR-10 not found"),
        entry("cifar10-mobilenet_v2-full_ft_prune", 0.781, base="full_ft", derived="prune"),
    ]
    result = document(entries, cases=GRID)
    result["datetime"] = "2026-11-23T12:00:00+00:00"
    return result


if __name__ == "__main__":
    path = Path(__file__).parent / "data" / "results_fixture.json"
    path.write_text(json.dumps(fixture_document(), indent=1) + "\n")
    print(f"wrote {path}")
