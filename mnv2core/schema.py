"""Profile tables validated by pydantic: every table has a schema (a pydantic dataclass such
as ``TrainConfig``, a technique's ``Parameters`` model, or one built from a study's parameter
defaults), and every problem becomes one line naming the file, the key, its value and what
was expected ("...: techniques.scratch.lr is 'fast'; expected a number")."""
from __future__ import annotations

import functools
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import ConfigError

STRICT = ConfigDict(extra="forbid", strict=True)  # TOML's types as written: no "1" for 1, no 1.5 for 1
Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
Names = Annotated[tuple[str, ...], Field(strict=False)]  # a TOML list of strings
Amount = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Share = Annotated[float, Field(ge=0.01, le=0.99)]  # a part to remove: neither nothing nor everything


class Parameters(BaseModel):
    """A technique's parameter table: each key typed, bounded and defaulted by its field
    (TOML's types as written). A technique declares a subclass; its profile table is checked
    against it and completed with its defaults."""

    model_config = STRICT

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return cls().model_dump()

    @classmethod
    def with_keys(cls, name: str, extra: dict[str, Any]) -> type[Parameters]:
        """This schema with more keys (all optional) that its table may hold: ``bases``,
        retraining keys."""
        return _extended(cls, name, tuple(extra.items()))


@functools.cache
def _extended(base: type[Parameters], name: str, extra: tuple) -> type[Parameters]:
    return create_model(name, __base__=base, **{key: (annotation, None) for key, annotation in extra})

TYPES = {"int_type": "a whole number", "int_from_float": "a whole number", "float_type": "a number",
         "bool_type": "true or false", "string_type": "a string", "list_type": "a list", "tuple_type": "a list of strings",
         "dict_type": "a table", "model_type": "a table", "dataclass_type": "a table"}
PLURALS = {"a whole number": "whole numbers", "a number": "numbers", "true or false": "true/false values",
           "a string": "strings"}
BOUNDS = {"greater_than_equal": ("ge", "values >= {}"), "greater_than": ("gt", "values > {}"),
          "less_than_equal": ("le", "values <= {}"), "less_than": ("lt", "values < {}"),
          "too_short": ("min_length", "at least {} item(s)")}


def problems(schema: Any, values: dict[str, Any], prefix: str) -> list[str]:
    """One line per problem of ``values`` against ``schema`` (a pydantic dataclass or model);
    ``prefix`` names the file and table ("profile.toml: techniques.scratch.")."""
    try:
        _build(schema, values)
    except ValidationError as exc:
        return [_line(error, values, prefix, schema) for error in exc.errors()]
    return []


def validated(schema: Any, values: dict[str, Any], prefix: str) -> Any:
    """``schema(**values)``, or ConfigError with one line per problem."""
    try:
        return _build(schema, values)
    except ValidationError as exc:
        raise ConfigError("\n".join(_line(error, values, prefix, schema) for error in exc.errors())) from None


def _build(schema: Any, values: dict[str, Any]) -> Any:
    return schema.model_validate(values) if hasattr(schema, "model_validate") else schema(**values)


def _line(error: dict, values: dict[str, Any], prefix: str, schema: Any) -> str:
    kind, loc = error["type"], error["loc"]
    key = str(loc[0]) if loc else ""
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"{prefix.rstrip('.')}: unknown key(s) [{key!r}]; allowed: {sorted(fields_of(schema))}"
    if kind in ("missing", "missing_argument"):
        return f"{prefix.rstrip('.')}: missing {key!r}"
    value = values.get(key, error.get("input"))
    within = len(loc) > 1 and isinstance(loc[1], int)  # an item of a list
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        return f"{prefix}{key} is {value!r}; choose one of {choices}"
    if kind in BOUNDS:
        bound, text = BOUNDS[kind]
        limit = error["ctx"][bound]
        return f"{prefix}{key} is {value!r}; expected {text.format(f'{limit:g}' if isinstance(limit, float) else limit)}"
    expected = TYPES.get(kind, error["msg"].lower())
    if within:
        expected = f"a list of {PLURALS.get(expected, expected)}"
    return f"{prefix}{key} is {value!r}; expected {expected}"


def fields_of(schema: Any) -> set[str]:
    """The keys a schema takes."""
    if hasattr(schema, "model_fields"):
        return set(schema.model_fields)
    return set(getattr(schema, "__pydantic_fields__", {}))


@functools.cache
def _parameters_schema(name: str, items: tuple) -> Any:
    fields = {key: (annotation, default) for key, annotation, default in items}
    return create_model(name, __config__=STRICT, **fields)


def parameters_schema(name: str, defaults: dict[str, Any]) -> Any:
    """A schema of a study's parameter table: each key typed like its default (a list like
    its items), numbers >= 0."""
    items = [(key, _annotation(default), default) for key, default in defaults.items()]
    return _parameters_schema(name, tuple((k, a, _hashable(d)) for k, a, d in items))


def _annotation(default: Any) -> Any:
    if isinstance(default, list):
        return list[_annotation(default[0])] if default else list[Any]
    if isinstance(default, bool) or isinstance(default, str):
        return type(default)
    return Annotated[type(default), Field(ge=0)]


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
