"""Phase 3 of the study: deploying and attacking the models (FX int8, ONNX Runtime, CPU
latency, FGSM, blur and noise). Each case measures its base model in this run."""
from pathlib import Path


def check_int8(m):
    assert m["int8_drop"] <= m["max_drop"], f"int8 lost {m['int8_drop']:.3f}, more than {m['max_drop']}"


def check_onnx(m):
    assert m["top1_agreement"] >= m["min_top1_agreement"] and m["max_abs_logit_diff"] < 1e-3


def check_latency(m):
    eager = [key for key in m["latency"] if key.startswith("eager_fp32_")]
    assert eager and all(value > 0 for value in m["latency"].values())
    assert len(m["speedup"]) == 3 * len(eager) and all(value > 0 for value in m["speedup"].values())


def check_fgsm(m):
    assert m["accuracy"] <= m["clean_accuracy"]
    if "int8_fgsm_accuracy" in m:
        assert m["int8_fgsm_accuracy"] <= m["int8_clean_accuracy"] + 0.02


def check_robustness(m):
    strongest_blur = list(m["blur"].values())[-1]
    strongest_noise = list(m["noise"].values())[-1]
    assert strongest_blur <= m["accuracy"] + 0.02 and strongest_noise <= m["accuracy"] + 0.02
    assert Path(m["plot"]).read_bytes()[:4] == b"\x89PNG"


def check_gradcam(m):
    assert m["feature_map"][0] >= 1 and 0 <= m["entropy"] <= 1 and 0 < m["top10_mass_share"] <= 1
    assert 0 <= m["deletion_auc"] <= 1 and 0 <= m["insertion_auc"] <= 1
    assert Path(m["plot"]).read_bytes()[:4] == b"\x89PNG"


CHECKS = {"int8": check_int8, "onnx": check_onnx, "latency": check_latency, "fgsm": check_fgsm,
          "robustness": check_robustness, "gradcam": check_gradcam}


def test_deployment(deployed_case, study, latency_timer, record_case):
    record = study.run_case(deployed_case)
    record_case(record)
    CHECKS[record["derived"]](record["metrics"])
