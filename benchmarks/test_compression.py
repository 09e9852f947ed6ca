"""Phase 2 of the study: compressing the full fine-tuned and the distilled models (iterative
and structured pruning, the lottery ticket, SVD low-rank classifier, spectra)."""
from pathlib import Path

import pytest


def check_prune(m):
    assert m["sparsity"] == pytest.approx(m["target_sparsity"], abs=0.005)
    sparsities = [r["sparsity"] for r in m["rounds"]]
    assert sparsities == sorted(sparsities) and len(set(sparsities)) == len(sparsities)


def check_structured(m):
    assert m["channels_after"] < m["channels_before"]
    assert m["params_after"] < m["params_before"] and m["macs_after"] < m["macs_before"]
    assert m["bytes_after"] < m["bytes_before"]


def check_lottery(m):
    assert m["sparsity"] > 0.4 and 0 <= m["control_accuracy"] <= 1
    assert m["reaches_dense"] == (m["ticket_accuracy"] >= m["dense_accuracy"])


def check_svd(m):
    ranks = [v["rank"] for v in m["variants"]]
    assert all(1 <= r <= min(m["head_shape"]) for r in ranks)
    smaller = [v for v in m["variants"] if v["rank"] < min(m["head_shape"])]
    assert all(v["params"] < m["params_before"] for v in smaller)


def check_spectra(m):
    assert all(1 <= layer["k95"] <= layer["rank"] for layer in m["spectra"])
    assert Path(m["plot"]).is_file() and Path(m["singular_values_file"]).is_file()


CHECKS = {"prune": check_prune, "structured": check_structured, "lottery": check_lottery,
          "svd": check_svd, "spectra": check_spectra}


def test_compression(compressed_case, study, record_case):
    record = study.run_case(compressed_case)
    record_case(record)
    metrics = record["metrics"]
    CHECKS[record["derived"]](metrics)
    if metrics["floor"] is not None:
        assert metrics["accuracy"] >= metrics["floor"], (
            f"{compressed_case.id}: test accuracy {metrics['accuracy']:.4f} is below the floor {metrics['floor']}")
