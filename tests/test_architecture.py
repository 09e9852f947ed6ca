"""The library's layering, read from its source: no import circle in mnv2core, technique
modules see the build context and never the study, and no pytest inside the library."""
import ast
from pathlib import Path

from mnv2core.fingerprint import imported_modules

PACKAGE = Path(__file__).resolve().parents[1] / "mnv2core"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    return {module_name(path): set(imported_modules(module_name(path))) for path in PACKAGE.rglob("*.py")}


def test_mnv2core_has_no_import_circle():
    edges = graph()
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(target):] + [target]))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_technique_modules_see_the_context_not_the_study():
    upper = {"mnv2core.study", "mnv2core.grid", "mnv2core.report", "mnv2core.cli", "mnv2core.gate"}
    for path in (PACKAGE / "techniques").glob("*.py"):
        imported = imported_modules(module_name(path))
        assert not imported & upper, f"{path.name} imports {imported & upper}"


def test_the_library_has_no_pytest_inside():
    for path in PACKAGE.rglob("*.py"):
        names = {n.names[0].name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import)}
        names |= {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {name for name in names if name.split(".")[0] == "pytest"}, path


def test_no_technique_is_named_outside_its_module():
    """The study, grid, report, results page, gate and pytest plugin read techniques from the
    registry (roles, declared metrics, tables): a technique's name as a string there is a
    technique living in two places."""
    from mnv2core.techniques import catalogue
    names = set(catalogue().techniques)
    readers = [PACKAGE / f"{name}.py" for name in ("study", "grid", "report", "docs", "gate", "cli", "results",
                                                   "cluster", "local_cluster", "planning", "keys", "roles",
                                                   "start_weights", "building", "technique_page", "compare")]
    readers.append(PACKAGE.parent / "fixtures" / "plugin.py")
    for path in readers:
        strings = {node.value for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        assert not strings & names, f"{path.name} names techniques {sorted(strings & names)}"


def test_every_summary_metric_and_page_figure_is_declared():
    from mnv2core.techniques import catalogue
    for name, technique in catalogue().techniques.items():
        declared = catalogue().declarations(name)
        summary_column = catalogue().presentation(name).summary_column
        if summary_column:
            assert declared.find(summary_column[1]), f"{name}: summary metric not declared"
        for metric in technique.metrics:
            assert not metric.on_page or metric.unit == "png", f"{name}.{metric.name}: only PNGs go on the page"


def test_no_role_is_compared_by_its_name():
    """A role is asked what it implies (``Role.has_model``...), never compared as a string."""
    from mnv2core.roles import Role
    names = {role.value for role in Role}
    for path in [*PACKAGE.rglob("*.py"), PACKAGE.parent / "fixtures" / "plugin.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                compared = [c for part in node.comparators for c in ast.walk(part)]
                strings = {c.value for c in compared if isinstance(c, ast.Constant) and isinstance(c.value, str)}
                assert not strings & names, f"{path.name}:{node.lineno} compares a role by name {strings & names}"
