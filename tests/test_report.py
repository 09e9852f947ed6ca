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
