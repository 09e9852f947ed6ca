"""python -m mnv2core compare: two results files side by side, every declared metric with its
change and the way it went, as the technique declares (int8's drop: lower is better)."""
import json

import pytest
from results_factory import document, entry

from mnv2core.cli import main
from mnv2core.compare import case_filter, compare_runs
from mnv2core.errors import ConfigError
from mnv2core.techniques import catalogue

KD, INT8 = "ds-mobilenet_v2-kd", "ds-mobilenet_v2-full_ft_int8"


def int8(accuracy, drop):
    return entry(INT8, accuracy, metrics={"fp32_accuracy": accuracy + drop, "int8_drop": drop, "max_drop": 0.1},
                 method="int8", base="full_ft", derived="int8")


def rows(first, second, **options):
    return {(r["case"], r["metric"].split(" ")[0]): r
            for r in compare_runs(document(first), document(second), catalogue().declarations, **options)}


def test_each_declared_metric_says_its_change_and_whether_that_is_better_by_its_declared_direction():
    table = rows([entry(KD, 0.60), int8(0.80, 0.02)], [entry(KD, 0.65), int8(0.79, 0.03)])
    assert table[(KD, "accuracy")] == {"case": KD, "metric": "accuracy (fraction)", "A": "0.6", "B": "0.65",
                                       "change": "+5.00 points", "verdict": "better"}
    assert table[(INT8, "int8_drop")]["verdict"] == "worse"  # a drop that grows is worse: lower is better
    assert table[(INT8, "accuracy")]["verdict"] == "worse"
    assert table[(INT8, "max_drop")]["verdict"] == "same"


def test_a_case_in_one_run_only_is_named_and_k_selects_cases_as_pytest_does():
    table = rows([entry(KD, 0.60), int8(0.80, 0.02)], [entry(KD, 0.60)], expression="int8 or kd")
    assert table[(INT8, "")]["verdict"] == "only in A"
    assert set(rows([entry(KD, 0.6), int8(0.8, 0.02)], [entry(KD, 0.6), int8(0.8, 0.02)],
                    expression="mobilenet_v2 and not int8")) == {(KD, "accuracy"), (KD, "floor")}
    assert not any(r["verdict"] == "same" for r in compare_runs(
        document([entry(KD, 0.6)]), document([entry(KD, 0.6)]), catalogue().declarations, changed_only=True))
    assert case_filter("(a or b) and not c")("x-a-y") and not case_filter("(a or b) and not c")("a-c")
    with pytest.raises(ConfigError, match=r"-k 'kd and \(int8': not an expression"):
        case_filter("kd and (int8")


def test_the_command_prints_both_files_and_the_counts(tmp_path, capsys):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(document([entry(KD, 0.60)])))
    second.write_text(json.dumps(document([entry(KD, 0.55)])))
    assert main(["compare", str(first), str(second), "--changed", "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"A: {first}\nB: {second}\n1 row(s): 0 better, 1 worse, 0 same")
    assert "| ds-mobilenet_v2-kd | accuracy (fraction) | 0.6 | 0.55 | -5.00 points | worse |" in out.replace("  ", "")
