from pathlib import Path

import pytest
from make_report_fixture import fixture_document

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
    for document in (stored, fresh):
        document.pop("version")
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
    from mnv2core.report import resolution_analysis

    def gradcam(base, size, grid, deletion, insertion, top):
        return {"base": base, "derived": "gradcam", "metrics": {
            "input_size": size, "feature_map": [grid, grid], "deletion_auc": deletion,
            "insertion_auc": insertion, "top10_mass_share": top}}

    items = {"c10-mobilenet_v2-kd_gradcam": gradcam("kd", 32, 1, 0.6, 0.6, 0.10),
             "c10-mobilenet_v2-full_ft_gradcam": gradcam("full_ft", 96, 3, 0.3, 0.7, 0.35)}
    text = resolution_analysis(items)
    assert "Most faithful maps: c10 96 px (full_ft, map 3x3), insertion - deletion AUC +0.400" in text
    assert "least: c10 32 px (kd, map 1x1), +0.000" in text
    assert "35% of the mass" in text and "map is 1x1" in text and "c10 32 px (kd, map 1x1)." in text
    assert resolution_analysis({}) == ""
