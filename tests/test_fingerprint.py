"""Cache keys that know the code: a technique's fingerprint covers its module and what it
imports from mnv2core, so an edit changes exactly the keys of what that code builds, and an
edit of what does not run (comments, docstrings, layout) changes none."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from mnv2core.fingerprint import code_fingerprint, import_closure

PACKAGE = Path(__file__).resolve().parents[1] / "mnv2core"
MODULES = ["mnv2core.techniques.pruning", "mnv2core.techniques.fgsm", "mnv2core.techniques.pgd",
           "mnv2core.techniques.finetune", "mnv2core.training", "mnv2core.cache"]


def fingerprints(root: Path, after_import: str = "") -> dict[str, str]:
    """The fingerprints of MODULES as a fresh interpreter computes them from the package at
    ``root``, having run ``after_import`` once the fingerprint module is imported."""
    code = ("import json, pathlib; from mnv2core import fingerprint\n"
            f"{after_import}\nprint(json.dumps({{m: fingerprint.code_fingerprint(m) for m in {MODULES!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout)


def test_an_edit_changes_the_fingerprint_of_its_module_and_of_what_imports_it(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "mnv2core", ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprints(tmp_path)
    assert before == fingerprints(tmp_path)  # unchanged code: the same keys, nothing rebuilt
    fgsm = tmp_path / "mnv2core" / "techniques" / "fgsm.py"
    fgsm.write_text(fgsm.read_text().replace("def check(", "EDITED = 1\n\n\ndef check(", 1))
    after = fingerprints(tmp_path)
    changed = {m for m in MODULES if before[m] != after[m]}
    assert changed == {"mnv2core.techniques.fgsm", "mnv2core.techniques.pgd"}  # PGD measures through FGSM's code


def test_a_run_keys_by_the_code_it_started_with_not_by_an_edit_made_while_it_runs(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "mnv2core", ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprints(tmp_path)
    edit = ("fgsm = pathlib.Path(fingerprint.PACKAGE, 'techniques', 'fgsm.py'); "
            "fgsm.write_text(fgsm.read_text() + 'NEXT_COMMIT = 1  # edited during a long run')")
    assert fingerprints(tmp_path, after_import=edit) == before
    assert fingerprints(tmp_path)["mnv2core.techniques.fgsm"] != before["mnv2core.techniques.fgsm"]  # the next run


def test_a_shared_library_module_reaches_every_technique_that_runs_it(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "mnv2core", ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprints(tmp_path)
    training = tmp_path / "mnv2core" / "training.py"
    training.write_text(training.read_text() + "\nNUMERICS_CHANGED = True\n")
    after = fingerprints(tmp_path)
    assert {m for m in MODULES if before[m] != after[m]} == set(MODULES) - {"mnv2core.cache"}


def test_comments_docstrings_and_layout_change_no_fingerprint(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "mnv2core", ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprints(tmp_path)
    training = tmp_path / "mnv2core" / "training.py"
    text = training.read_text()
    edited = ('"""A reworded module docstring."""\n' + text.split('"""', 2)[2]).replace(
        "def evaluate(", "# a new comment\n\n\ndef evaluate(", 1)
    edited = edited.replace('(k, v) not in (("val_accuracy", None), ("kept", False))',
                            '(k, v) not in (\n    ("val_accuracy", None), ("kept", False),\n)', 1)
    assert edited != text
    training.write_text(edited)
    assert fingerprints(tmp_path) == before


def test_the_closure_follows_imports_not_the_whole_package():
    closure = import_closure("mnv2core.techniques.pruning")
    assert {"mnv2core.compression.channels", "mnv2core.training", "mnv2core.models"} <= closure
    assert not closure & {"mnv2core.techniques.fgsm", "mnv2core.study", "mnv2core.report"}
    assert len(code_fingerprint("mnv2core.techniques.pruning")) == 24


def test_another_version_of_a_runtime_library_changes_every_fingerprint(monkeypatch):
    """OpenVINO and NNCF make the OpenVINO twins; torchao the PT2E one: their versions key them."""
    from importlib import metadata

    from mnv2core import fingerprint

    def keys(openvino: str) -> tuple[dict, str]:
        real = metadata.version
        monkeypatch.setattr(fingerprint.metadata, "version",
                            lambda name: openvino if name == "openvino" else real(name))
        fingerprint.library_versions.cache_clear()
        fingerprint.code_fingerprint.cache_clear()
        return fingerprint.library_versions(), fingerprint.code_fingerprint("mnv2core.study")

    try:
        (versions, one), (_, other) = keys("2026.4.1"), keys("2027.0.0")
    finally:
        monkeypatch.undo()
        fingerprint.library_versions.cache_clear()
        fingerprint.code_fingerprint.cache_clear()
    assert {"openvino", "nncf", "torchao"} <= set(versions) and one != other
