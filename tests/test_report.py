from pathlib import Path

import pytest
from make_report_fixture import fixture_document
from results_factory import document, entry

from mnv2core.cli import main
from mnv2core.report import render_report

DATA = Path(__file__).parent / "data"


def test_markdown_report_matches_the_reviewed_golden_output():
    assert render_report(fixture_document(), "md") == (DATA / "report_golden.md").read_text()


def test_the_stored_fixture_is_current():
    """data/results_fixture.json is what make_report_fixture.py writes (the CLI test reads it)."""
    import json
    stored = json.loads((DATA / "results_fixture.json").read_text())
    fresh = fixture_document()
    for results in (stored, fresh):
        results.pop("version")
    assert stored == fresh


def test_cli_report_prints_the_terminal_tables(capsys):
    assert main(["report", str(DATA / "results_fixture.json")]) == 0
    out = capsys.readouterr().out
    assert "Study summary" in out and "0.702 (failed)" in out and "not run" in out
    assert "|" not in out  # terminal format, not markdown


def test_cli_names_a_missing_results_file(capsys, tmp_path):
    assert main(["report", str(tmp_path / "nope.json")]) == 2
    assert "no such results file" in capsys.readouterr().err


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown report format"):
        render_report(fixture_document(), "html")


def test_resolution_analysis_names_the_most_faithful_and_the_1x1_maps():
    def gradcam(case, size, grid, deletion, insertion, top):
        base = case.rsplit("-", 1)[1].removesuffix("_gradcam")
        return entry(case, metrics={"input_size": size, "feature_map": [grid, grid], "deletion_auc": deletion,
                                    "insertion_auc": insertion, "top10_mass_share": top, "sample_accuracy": 0.5,
                                    "layer": "net.features", "images": 64, "entropy": 0.5, "plot": "x.png"},
                     base=base, derived="gradcam", method="gradcam")

    text = render_report(document([gradcam("c10-mobilenet_v2-kd_gradcam", 32, 1, 0.6, 0.6, 0.10),
                                   gradcam("c10-mobilenet_v2-full_ft_gradcam", 96, 3, 0.3, 0.7, 0.35)]))
    assert ("Most faithful maps: c10 mobilenet_v2 full_ft at 96 px (map 3x3), insertion - deletion AUC +0.400"
            in text)
    assert "least: c10 mobilenet_v2 kd at 32 px (map 1x1), +0.000" in text
    assert "35% of the mass" in text and "map is 1x1" in text and "c10 mobilenet_v2 kd at 32 px (map 1x1)." in text
    one = render_report(document([gradcam("c10-mobilenet_v2-kd_gradcam", 32, 1, 0.6, 0.6, 0.10)]))
    assert "Resolution study" not in one


def test_the_int8_question_is_answered_for_every_model_with_several_bases():
    def int8(case, drop):
        base = case.rsplit("-", 1)[1].removesuffix("_int8")
        return entry(case, 0.7, metrics={"fp32_accuracy": 0.7 + drop, "int8_drop": drop, "calibration_images": 64}, base=base,
                     derived="int8", method="int8")

    text = render_report(document([int8("c10-mobilenet_v2-full_ft_int8", 0.03), int8("c10-mobilenet_v2-kd_int8", 0.01),
                                   int8("c10-resnet18-full_ft_int8", 0.02)]))
    assert "More stable under int8, mobilenet_v2: kd (accuracy change -1.0 points, against -3.0 for full_ft)." in text
    assert "under int8, resnet18" not in text  # one base: nothing to compare
    tie = render_report(document([int8("c10-mobilenet_v2-full_ft_int8", 0.01), int8("c10-mobilenet_v2-kd_int8", 0.01)]))
    assert "More stable under int8, mobilenet_v2: full_ft and kd (a tie) (accuracy change -1.0 points)." in tie


def test_a_case_that_errored_before_recording_is_a_problem_not_a_table_row():
    """Its technique's table never sees it (the speed table read its rates and crashed)."""
    text = render_report(document([
        entry("tiny-mobilenet_v2-full_ft", 0.5),
        entry("tiny-mobilenet_v2-train_speed", outcome="failed", error="ConfigError: no worker offers BENCH"),
    ]))
    assert "tiny-mobilenet_v2-train_speed" in text and "no worker offers BENCH" in text
