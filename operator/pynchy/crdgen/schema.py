"""pydantic JSON Schema → Kubernetes structural OpenAPI v3 schema.

pydantic emits JSON Schema 2020-12 ($defs/$ref, anyOf-with-null for optional fields,
numeric exclusive bounds, titles). A CRD needs a *structural* schema: every node typed,
no references, no anyOf around types, no additionalProperties beside properties. This
module is the one place that bridges the two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

# Keys a structural schema may carry; anything else from pydantic (title, ...) is dropped.
_KEEP = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "default",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minProperties",
    "maxProperties",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
}


class CrdJsonSchema(GenerateJsonSchema):
    """Emit defaults from default factories so the API server applies them.

    A nested object defaults to its fully materialised value (not `{}`): the API server
    checks a default against the CEL rules before nested defaulting, so `{}` would fail
    rules that read defaulted fields.
    """

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        if "default_factory" in schema and not schema.get("default_factory_takes_data"):
            factory = cast(Callable[[], Any], schema["default_factory"])  # takes no data: checked just above
            value = factory()
            if isinstance(value, BaseModel):
                return value.model_dump(mode="json", by_alias=True, exclude_none=True)
            if value in ([], {}):
                return NoDefault
            return value
        default = super().get_default_value(schema)
        return NoDefault if default is None else default

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `model` (wire names, defaults, CEL rules)."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=CrdJsonSchema)
    defs = raw.pop("$defs", {})
    return _convert(raw, defs, path=model.__name__)


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a $ref, keeping sibling keys (a field's description beats the model's docstring)."""
    if "$ref" not in node:
        return node
    name = node["$ref"].rsplit("/", 1)[-1]
    merged = dict(defs[name])
    for key, value in node.items():
        if key == "$ref":
            continue
        if key == "x-kubernetes-validations":
            merged[key] = [*merged.get(key, []), *value]
        else:
            merged[key] = value
    return merged


def _unwrap_optional(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    for combinator in ("anyOf", "oneOf"):
        if combinator not in node:
            continue
        branches = [b for b in node[combinator] if b != {"type": "null"}]
        if len(branches) != 1:
            raise TypeError(f"{path}: unions of several types cannot be expressed in a structural schema")
        outer = {k: v for k, v in node.items() if k != combinator}
        inner = _resolve(branches[0], defs)
        rules = [*inner.get("x-kubernetes-validations", []), *outer.pop("x-kubernetes-validations", [])]
        node = {**inner, **outer}
        if rules:
            node["x-kubernetes-validations"] = rules
    if "allOf" in node and len(node["allOf"]) == 1:
        outer = {k: v for k, v in node.items() if k != "allOf"}
        node = {**_resolve(node["allOf"][0], defs), **outer}
    return node


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    node = _unwrap_optional(_resolve(node, defs), defs, path)
    if "const" in node:
        node = {**node, "enum": [node.pop("const")]}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "properties":
            out[key] = {name: _convert(child, defs, f"{path}.{name}") for name, child in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _convert(value, defs, f"{path}{{}}")
            # `false` is pydantic's extra="forbid"; the API server rejects unknown fields itself
            # (kubectl's strict field validation) and forbids it beside `properties`.
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020-12 numeric bound → OpenAPI v3.0 boolean flag.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "default" and value is None:
            continue
        else:
            out[key] = value
    if "type" not in out and "x-kubernetes-int-or-string" not in out:
        if "properties" in out:
            out["type"] = "object"
        else:
            raise TypeError(f"{path}: every schema node needs a type to be structural")
    if out.get("required") == []:
        del out["required"]
    return out
