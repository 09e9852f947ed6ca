"""The library's layering, read from its source: no import circle in mnv2core, technique
modules see the build context and never the study, and no pytest inside the library."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mnv2core"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """mnv2core modules ``path`` imports, at any depth (inside functions and ``if
    TYPE_CHECKING:`` too: a type a module names is a dependency all the same)."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mnv2core")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("mnv2core"):
                found |= {f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base for alias in node.names}
    return found - {module_name(path)}


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


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
        assert not imports_of(path) & upper, f"{path.name} imports {imports_of(path) & upper}"


def test_the_library_has_no_pytest_inside():
    for path in PACKAGE.rglob("*.py"):
        names = {n.names[0].name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import)}
        names |= {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {name for name in names if name.split(".")[0] == "pytest"}, path
