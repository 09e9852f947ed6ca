"""The companion studies, cases of the same grid: VGG16 with separation-index compression,
light digit classifiers against larger baselines, and ResNet-18's low-rank head."""
from pathlib import Path

from mnv2core.models import build_model, count_parameters


def is_png(path) -> bool:
    return Path(path).read_bytes()[:4] == b"\x89PNG"


def check_vgg_train(m):
    assert len(m["lr_search"]) >= 1 and m["chosen_lr"] in [t["lr"] for t in m["lr_search"]]
    best = max(t["val_accuracy"] for t in m["lr_search"])
    assert any(t["lr"] == m["chosen_lr"] and t["val_accuracy"] == best for t in m["lr_search"])
    assert m["validation_images"] > 0 and is_png(m["curves_plot"])
    assert all("val_accuracy" in epoch for epoch in m["epochs"])


def check_vgg_head(m):
    assert 0 <= m["trained_accuracy"] <= 1 and is_png(m["curves_plot"])


def check_vgg_si(m):
    layers = m["conv_layers"]
    assert len(m["si_train"]) == len(m["si_test"]) == layers == 13
    assert all(0 <= v <= 1 for v in m["si_train"] + m["si_test"])
    assert 1 <= m["layers_kept"] <= layers
    kept_best = max(m["si_train"][:m["layers_kept"]])
    assert max(m["si_train"][m["layers_kept"]:], default=0) <= kept_best + m["layer_gain"] + 1e-9
    selection = [s["si"] for s in m["selection"]]
    assert 1 <= m["features_selected"] == len(selection) <= m["channels_available"]
    assert selection == sorted(selection), "greedy selection must not lower the separation index"
    assert m["params_after"] < m["params_before"]
    assert is_png(m["si_layers_plot"]) and is_png(m["si_features_plot"])


def check_light(m, model_name):
    assert m["parameters"] == count_parameters(build_model(model_name, 10))
    assert all(value > 0 for value in m["latency"].values()) and m["latency"]


def check_resnet_head(m):
    assert m["parameters"] > 10_000_000


def check_resnet_lowrank(m):
    ranks = [v["rank"] for v in m["variants"]]
    assert ranks == sorted(ranks, reverse=True) and all(1 <= r < min(m["head_shape"]) for r in ranks)
    assert all(v["params"] < m["params_before"] for v in m["variants"])
    assert {s["layer"] for s in m["spectra"]} == {"layer2.0.conv1", "fc"}
    assert all(1 <= s["k95"] <= s["rank"] for s in m["spectra"])
    assert set(m["latency"]) == {f"{name}_b{m['batch_size']}_ms" for name in
                                 ["dense"] + [f"keep{round(v['keep'] * 100)}" for v in m["variants"]]}


CHECKS = {"vgg_train": check_vgg_train, "vgg_head": check_vgg_head, "vgg_si": check_vgg_si,
          "resnet_head": check_resnet_head, "resnet_lowrank": check_resnet_lowrank}


def test_companion(companion_case, study, latency_timer, record_case):
    record = study.run_case(companion_case)
    record_case(record)
    metrics = record["metrics"]
    if companion_case.technique.startswith("light_"):
        check_light(metrics, companion_case.model)
    else:
        CHECKS[companion_case.technique](metrics)
    assert metrics["accuracy"] >= metrics["floor"], (
        f"{companion_case.id}: test accuracy {metrics['accuracy']:.4f} is below the floor {metrics['floor']}")

