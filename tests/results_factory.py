"""Small, explicit case entries and results documents for the results/report/gate tests."""
from mnv2core.results import build_results

MACHINE = {"node": "ci-1", "machine": "x86_64", "cpu": {"brand_raw": "Test CPU", "count": 2}}
COMMIT = {"id": "0123456789abcdef", "dirty": False, "branch": "main"}


def entry(case, accuracy=None, outcome="passed", when="call", error=None, metrics=None, **extra):
    """One case entry as the pytest controller writes it to records-RUN.jsonl."""
    records = []
    if accuracy is not None or metrics:
        dataset, model, technique = case.rsplit("-", 2)
        records.append({
            "case": case, "dataset": dataset, "model": model, "technique": technique,
            "profile": "smoke", "seed": 0,
            "metrics": {"accuracy": accuracy, "floor": 0.3, **(metrics or {})},
            "provenance": {}, "cache": {"key": "k" + case[-4:], "status": "built", "events": []}, **extra,
        })
    return {"case": case, "nodeid": f"benchmarks/test_training.py::test_training[{case}]", "outcome": outcome,
            "when": when, "duration": 1.5, "records": records, "error": error}


def document(entries, cases=None, machine=None):
    run = {"run_id": "test-run", "profile": "smoke", "seed": 0, "complete": True,
           "cases": cases or [e["case"] for e in entries]}
    return build_results(entries, machine_info=machine or MACHINE, commit_info=COMMIT, run=run)
