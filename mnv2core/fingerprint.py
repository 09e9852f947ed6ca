"""Fingerprints of the code that makes a cached entry: a module's code and the code of every
mnv2core module it imports, at any depth (read from the files' import statements, so what a
module can run is what it names), plus the versions of the libraries whose numerics it runs
through. A cache key that holds the fingerprint of the code behind its entry goes stale by
itself when that code changes; nothing needs a hand-bumped version number. The code is the
module's syntax tree without its docstrings: comments, docstrings and layout do not run, so
editing them keeps every cached entry."""
from __future__ import annotations

import ast
import functools
import hashlib
from importlib import metadata
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# The package's sources as this process found them when it started: an edit made while a run
# goes on (the next commit, during a long grid) must not key the run's entries by code it does
# not run.
SOURCES = {path: path.read_bytes() for path in PACKAGE.rglob("*.py")}
LIBRARIES = ("torch", "torchvision", "onnxruntime", "onnx", "timm", "torch-pruning", "numpy", "torchao",
             "openvino", "nncf")  # the optional runtime's: "absent" where not installed


@functools.cache
def code_fingerprint(module: str) -> str:
    """sha256 (24 hex digits) of ``module``'s import closure within mnv2core and the library
    versions."""
    digest = hashlib.sha256()
    for name in sorted(import_closure(module)):
        digest.update(name.encode())
        digest.update(_code(_path(name)))
    for library, version in library_versions().items():
        digest.update(f"{library}={version}".encode())
    return digest.hexdigest()[:24]


@functools.cache
def library_versions() -> dict[str, str]:
    versions = {}
    for library in LIBRARIES:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = "absent"
    return versions


@functools.cache
def import_closure(module: str) -> frozenset[str]:
    """``module`` and every mnv2core module it imports, directly or through others, with the
    packages above each (importing a module runs their ``__init__``)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or not _exists(_path(name)):
            continue
        seen.add(name)
        todo += [*imported_modules(name), *_packages_above(name)]
    return frozenset(seen)


@functools.cache
def imported_modules(module: str) -> frozenset[str]:
    """The mnv2core modules ``module``'s source imports, at any depth of its code (inside
    functions and ``if TYPE_CHECKING:`` too); ``from PACKAGE import NAME`` is the module NAME
    when there is one, else PACKAGE."""
    path = _path(module)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(_source(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mnv2core")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("mnv2core"):
                found |= {f"{base}.{alias.name}" if _exists(_path(f"{base}.{alias.name}")) else base
                          for alias in node.names}
    return frozenset(found - {module})


@functools.cache  # every technique's closure shares most modules: each is parsed once
def _code(path: Path) -> bytes:
    """What of ``path`` runs: its syntax tree (no comments, no line numbers) less docstrings."""
    tree = ast.parse(_source(path))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


def _packages_above(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def _exists(path: Path) -> bool:
    return path in SOURCES or path.is_file()


def _source(path: Path) -> bytes:
    return SOURCES[path] if path in SOURCES else path.read_bytes()


def _path(module: str) -> Path:
    parts = module.split(".")[1:]
    path = PACKAGE.joinpath(*parts)
    return path / "__init__.py" if (path / "__init__.py").is_file() else path.with_suffix(".py")
