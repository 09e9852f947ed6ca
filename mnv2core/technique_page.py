"""docs/techniques.md, generated from the technique registry (``python -m mnv2core techniques
-o docs/techniques.md``), so the page cannot drift from the code: each technique's role,
study, what it waits for, its profile table's keys with their defaults, and the metrics its
records hold (gated ones marked)."""
from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any

from .profiles import TrainConfig
from .registry import Catalogue, Technique
from .roles import Role


def techniques_page(catalogue: Catalogue, command: str) -> str:
    lines = ["# Techniques", "",
             f"Generated from the technique registry by `{command}`; a unit test fails if it is stale.",
             "Each technique is one module under `mnv2core/techniques/` (see [contributing](contributing.md)).",
             "A profile table's keys override the defaults below; a compression's or deployment's table may",
             "also narrow where it runs (`bases`, `models`, `datasets`); a trained technique's table is its",
             "[training recipe](#training-recipes).", ""]
    lines += ["| technique | role | study | title |", "|---|---|---|---|"]
    ordered = _ordered(catalogue)
    lines += [f"| [`{t.name}`](#{t.name}) | {t.role} | {t.study} | {t.title} |" for t in ordered]
    described: dict[str, str] = {}  # module -> the first technique whose section gives its docstring
    for technique in ordered:
        summary = (f"See [`{described[technique.module]}`](#{described[technique.module]})."
                   if technique.module in described else _summary(technique))
        described.setdefault(technique.module, technique.name)
        lines += ["", *_section(technique, summary)]
    lines += ["", *_recipe_section()]
    return "\n".join(lines).rstrip() + "\n"


def _recipe_section() -> list[str]:
    """The keys of a trained technique's ``[techniques.NAME]`` table (``TrainConfig``)."""
    lines = ["## Training recipes", "", " ".join(TrainConfig.__doc__.split()), "",
             "| key | type | default |", "|---|---|---|"]
    hints = typing.get_type_hints(TrainConfig, include_extras=True)
    for field in dataclasses.fields(TrainConfig):
        default = "required" if field.default is dataclasses.MISSING else f"`{_toml(field.default)}`"
        lines.append(f"| `{field.name}` | {_type_name(hints[field.name])} | {default} |")
    return lines


def _type_name(hint: Any) -> str:
    """``Annotated[int, Field(gt=0)]`` -> "int > 0"; ``Literal["a", "b"]`` -> "a | b"."""
    if typing.get_origin(hint) is typing.Literal:
        return " \\| ".join(str(v) for v in typing.get_args(hint))
    if typing.get_origin(hint) is typing.Annotated:
        base, *meta = typing.get_args(hint)
        constraints = [c for m in meta for c in (getattr(m, "metadata", None) or [m])]
        bounds = [f"{symbol} {getattr(c, attr)}" for c in constraints
                  for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
                  if getattr(c, attr, None) is not None]
        return " ".join([_type_name(base), ", ".join(bounds)]).strip()
    return getattr(hint, "__name__", str(hint))


def _ordered(catalogue: Catalogue) -> list[Technique]:
    roles = list(Role)
    return sorted(catalogue.techniques.values(), key=lambda t: (roles.index(t.role), t.study, t.name))


def _section(technique: Technique, summary: str) -> list[str]:
    lines = [f"## {technique.name}", "", f"**{technique.title}** ({technique.role}, study `{technique.study}`, "
             f"module `{technique.module}`). {summary}", ""]
    if technique.needs:
        lines += [f"Waits for: {', '.join(f'`{n}`' for n in technique.needs)}.", ""]
    defaults = technique.params.defaults()
    if defaults:
        lines += [f"Profile table `[{technique.role.section}.{technique.name}]`: " + ", ".join(f"`{k} = {_toml(v)}`" for k, v in defaults.items()) + ".", ""]
    if technique.metrics:
        lines += ["| metric | unit | better | gated | what |", "|---|---|---|---|---|"]
        lines += [f"| `{m.name}` | {m.unit} | {m.better or ''} | {m.tolerance if m.gated else ''} | {m.doc} |"
                  for m in technique.metrics]
    return lines


def _summary(technique: Technique) -> str:
    """The first paragraph of its module's docstring, on one line."""
    doc = (sys.modules[technique.module].__doc__ or "").strip() if technique.module in sys.modules else ""
    return " ".join(doc.split("\n\n")[0].split())


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "none" if value is None else str(value)
