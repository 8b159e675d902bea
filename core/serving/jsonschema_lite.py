"""A small JSON-schema checker for tool-call arguments (no third-party dependency), shared by the adapters.

It covers what tool schemas generated from Pydantic models, TypedDicts and functions use: ``type``
(one or a list), ``enum``, ``const``, ``required``, ``properties``, ``additionalProperties: false``,
``items``, ``anyOf``/``oneOf``/``allOf`` and local ``$ref`` pointers. Other keywords are ignored, so a
value is reported invalid only for a violation the checker understands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["schema_errors", "schema_problems"]

_MAX_DEPTH = 32


def schema_errors(value: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every violation of ``schema`` by ``value`` found, as ``"path: problem"`` strings (empty = valid)."""
    errors: list[str] = []
    _check(value, schema, schema, "$", errors, 0)
    return errors


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, (list, tuple))
    if kind == "object":
        return isinstance(value, Mapping)
    return True  # unknown type names are not ours to reject


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, Mapping) else None


def _check(value: Any, schema: Any, root: Mapping[str, Any], path: str, errors: list[str], depth: int) -> None:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return
    if isinstance(ref := schema.get("$ref"), str):
        target = _resolve(ref, root)
        if target is not None:
            _check(value, target, root, path, errors, depth + 1)
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if names and not any(_type_ok(value, k) for k in names):
            errors.append(f"{path}: expected {' or '.join(map(str, names))}, got {type(value).__name__}")
            return
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}")
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and not any(
                not _sub_errors(value, o, root, path, depth) for o in options):
            errors.append(f"{path}: matches none of the {key} alternatives")
    for sub in schema.get("allOf") or ():
        _check(value, sub, root, path, errors, depth + 1)
    if isinstance(value, Mapping):
        raw_props = schema.get("properties")
        props: Mapping[str, Any] = raw_props if isinstance(raw_props, Mapping) else {}
        for key in schema.get("required") or ():
            if key not in value:
                errors.append(f"{path}: missing required property {key!r}")
        for key, sub in props.items():
            if key in value:
                _check(value[key], sub, root, f"{path}.{key}", errors, depth + 1)
        extra = schema.get("additionalProperties")
        for key in value:
            if key in props:
                continue
            if extra is False:
                errors.append(f"{path}: unexpected property {key!r}")
            elif isinstance(extra, Mapping):
                _check(value[key], extra, root, f"{path}.{key}", errors, depth + 1)
    if isinstance(value, (list, tuple)) and isinstance(items := schema.get("items"), Mapping):
        for i, item in enumerate(value):
            _check(item, items, root, f"{path}[{i}]", errors, depth + 1)


def _sub_errors(value: Any, schema: Any, root: Mapping[str, Any], path: str, depth: int) -> list[str]:
    errs: list[str] = []
    _check(value, schema, root, path, errs, depth + 1)
    return errs


_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SCHEMA_ONE = ("not", "if", "then", "else", "contains", "propertyNames")


def schema_problems(schema: Any) -> list[str]:
    """What makes ``schema`` not a JSON Schema the checker and the providers can use, as ``"path: problem"``
    strings (empty: fine). Checked: the shape of the keywords above, type names, ``required`` naming
    strings, ``enum`` being a list, local ``$ref`` pointers that resolve, and nesting depth."""
    problems: list[str] = []
    if not isinstance(schema, Mapping):
        return [f"$: a schema must be an object, got {type(schema).__name__}"]
    _schema(schema, schema, "$", problems, 0)
    return problems


def _schema(node: Any, root: Mapping[str, Any], path: str, out: list[str], depth: int) -> None:
    if len(out) >= 20:
        return
    if isinstance(node, bool):
        return  # true / false are schemas
    if not isinstance(node, Mapping):
        out.append(f"{path}: a schema must be an object or a boolean, got {type(node).__name__}")
        return
    if depth > _MAX_DEPTH:
        out.append(f"{path}: nested more than {_MAX_DEPTH} levels deep")
        return
    kinds = node.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else kinds
        if not isinstance(names, list) or not names or not all(isinstance(k, str) for k in names):
            out.append(f"{path}.type: must be a type name or a list of them, got {kinds!r}")
        else:
            bad = [k for k in names if k not in _TYPES]
            if bad:
                out.append(f"{path}.type: unknown type(s) {', '.join(map(repr, bad))}")
    req = node.get("required")
    if req is not None and (not isinstance(req, list) or not all(isinstance(k, str) for k in req)):
        out.append(f"{path}.required: must be a list of property names, got {req!r}")
    if "enum" in node and not isinstance(node["enum"], list):
        out.append(f"{path}.enum: must be a list, got {type(node['enum']).__name__}")
    ref = node.get("$ref")
    if ref is not None:
        if not isinstance(ref, str):
            out.append(f"{path}.$ref: must be a string, got {type(ref).__name__}")
        elif ref.startswith("#") and _resolve(ref, root) is None:
            out.append(f"{path}.$ref: {ref!r} does not resolve inside the schema")
    for key in _SCHEMA_LISTS:
        if key in node:
            subs = node[key]
            if not isinstance(subs, list):
                out.append(f"{path}.{key}: must be a list of schemas, got {type(subs).__name__}")
                continue
            for i, sub in enumerate(subs):
                _schema(sub, root, f"{path}.{key}[{i}]", out, depth + 1)
    for key in _SCHEMA_MAPS:
        if key in node:
            subs = node[key]
            if not isinstance(subs, Mapping):
                out.append(f"{path}.{key}: must be an object of schemas, got {type(subs).__name__}")
                continue
            for name, sub in subs.items():
                _schema(sub, root, f"{path}.{key}.{name}", out, depth + 1)
    for key in (*_SCHEMA_ONE, "additionalProperties", "items"):
        if key in node:
            sub = node[key]
            if key == "items" and isinstance(sub, list):  # draft-7 tuple form
                for i, s in enumerate(sub):
                    _schema(s, root, f"{path}.items[{i}]", out, depth + 1)
            else:
                _schema(sub, root, f"{path}.{key}", out, depth + 1)
