"""Model templates for ``ferry create model --template NAME --set k=v``.

A template (``templates/*.yaml``) holds a name, a description, its parameters with defaults and
help, and a manifest whose strings may contain ``${param}``. A string that is exactly
``${param}`` takes the parameter's typed value (so ``replicas: ${replicas}`` stays an integer);
otherwise the value is substituted into the text. ``--set`` values are parsed as YAML scalars and
must have the type of the parameter's default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from ferry_cli.errors import CliError

_WHOLE = re.compile(r"^\$\{([A-Za-z][A-Za-z0-9_]*)\}$")
_INNER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9_]*)\}")
Value = str | int | float | bool


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Value
    help: str


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    parameters: dict[str, Parameter]
    manifest: dict[str, Any]

    def render(self, overrides: dict[str, Value]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(self.parameters))
        if unknown:
            raise CliError(
                f"template {self.name} has no parameter {', '.join(unknown)}; "
                f"its parameters: {', '.join(self.parameters)}"
            )
        values: dict[str, Value] = {name: p.default for name, p in self.parameters.items()}
        for name, value in overrides.items():
            values[name] = _coerce(self.parameters[name], value)
        rendered: dict[str, Any] = _substitute(self.manifest, values)
        return rendered


def _coerce(param: Parameter, value: Value) -> Value:
    want = type(param.default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is str:
        return str(value)
    if type(value) is not want:
        raise CliError(f"--set {param.name}={value}: expected {want.__name__} (default {param.default!r})")
    return value


def _substitute(node: Any, values: dict[str, Value]) -> Any:
    if isinstance(node, dict):
        return {key: _substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(item, values) for item in node]
    if isinstance(node, str):
        if match := _WHOLE.match(node):
            return values[match.group(1)]
        return _INNER.sub(lambda m: str(values[m.group(1)]), node)
    return node


def parse_sets(pairs: list[str]) -> dict[str, Value]:
    """``["replicas=2", "name=x"]`` → ``{"replicas": 2, "name": "x"}`` (values as YAML scalars)."""
    parsed: dict[str, Value] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        parsed[key.strip()] = value if isinstance(value, str | int | float | bool) else raw
    return parsed


def _load(text: str) -> Template:
    data = yaml.safe_load(text)
    params = {
        name: Parameter(name=name, default=spec["default"], help=str(spec.get("help", "")))
        for name, spec in (data.get("parameters") or {}).items()
    }
    return Template(
        name=data["name"], description=data["description"], parameters=params, manifest=data["manifest"]
    )


def all_templates() -> list[Template]:
    folder = resources.files("ferry_cli") / "templates"
    found = [_load(entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".yaml")]
    return sorted(found, key=lambda t: t.name.lower())


def find_template(name: str) -> Template:
    templates = all_templates()
    for template in templates:
        if template.name.lower() == name.lower():
            return template
    raise CliError(
        f"no template {name!r}; available: {', '.join(t.name for t in templates)} (`ferry templates`)"
    )
