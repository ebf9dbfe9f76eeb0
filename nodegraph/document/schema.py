"""A JSON Schema (draft 2020-12) of the graph file format for the node types of a registry.

Editors (VS Code's YAML extension, say) use it to complete node types and input names and to flag
wrong literals while typing. It is a helper, not the judge: `load_plan` is authoritative (the schema
cannot check that a link's target exists, that its type fits, or that the graph has no cycle).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import PydanticSchemaGenerationError

from nodegraph.document.inputs import accepts_literal
from nodegraph.document.load import SUPPORTED_VERSIONS, TOP_LEVEL_KEYS
from nodegraph.document.params import PARAM_KEYS, PARAM_TYPES
from nodegraph.document.refs import ID_PATTERN, LINK_JSON_PATTERN, PARAM_JSON_PATTERN
from nodegraph.nodes.registry import Registry
from nodegraph.nodes.spec import InputSpec, NodeSpec, type_name_of

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _def_name(type_name: str) -> str:
    return "node-" + re.sub(r"[^A-Za-z0-9_.-]", "_", type_name)


def _literal_schema(spec: NodeSpec, ispec: InputSpec, defs: dict[str, Any]) -> dict[str, Any] | None:
    """The literal's schema from its pydantic adapter; its own `$defs` are hoisted with a prefix."""
    if ispec.literal_adapter is None or not accepts_literal(ispec):
        return None
    prefix = f"{_def_name(spec.type_name)}-{ispec.name}-"
    try:
        schema = ispec.literal_adapter.json_schema(ref_template="#/$defs/" + prefix + "{model}")
    except (PydanticSchemaGenerationError, TypeError, ValueError):
        return {}
    for name, sub in schema.pop("$defs", {}).items():
        defs[prefix + name] = sub
    return schema


def _input_schema(spec: NodeSpec, ispec: InputSpec, defs: dict[str, Any]) -> dict[str, Any]:
    options: list[dict[str, Any]] = [{"$ref": "#/$defs/link"}, {"$ref": "#/$defs/param_ref"}]
    if ispec.is_list:
        options.append({"type": "array", "items": {"$ref": "#/$defs/link"}})
    literal = _literal_schema(spec, ispec, defs)
    if literal is not None:
        options.append(literal)
    elif ispec.optional:
        options.append({"type": "null"})
    kind = type_name_of(ispec.annotation)
    how = "a literal or a link" if literal is not None else "a link to an output of this type"
    description = f"{ispec.description} ({kind}; {how})".strip()
    return {"description": description, "anyOf": options}


def _node_schema(spec: NodeSpec, defs: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {"type": {"const": spec.type_name}}
    for name, ispec in spec.inputs.items():
        properties[name] = _input_schema(spec, ispec, defs)
    return {
        "title": spec.type_name,
        "description": spec.description,
        "type": "object",
        "properties": properties,
        "required": ["type", *[n for n, i in spec.inputs.items() if i.required]],
        "additionalProperties": False,
    }


def _param_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "type": {"enum": list(PARAM_TYPES)},
            "default": {},
            "description": {"type": "string"},
            "minimum": {"type": "number"},
            "maximum": {"type": "number"},
            "choices": {"type": "array"},
        },
        "required": ["type"],
        "propertyNames": {"enum": list(PARAM_KEYS)},
    }


def graph_json_schema(registry: Registry) -> dict[str, Any]:
    """The schema of a graph file whose nodes are the types in `registry` (one branch per type)."""
    defs: dict[str, Any] = {
        "link": {"type": "string", "pattern": LINK_JSON_PATTERN,
                 "description": "'@node' (its single output) or '@node.output'"},
        "param_ref": {"type": "string", "pattern": PARAM_JSON_PATTERN, "description": "'$param'"},
        "param": _param_schema(),
    }
    branches = []
    type_names = sorted(registry.specs)
    for type_name in type_names:
        spec = registry.specs[type_name]
        name = _def_name(type_name)
        defs[name] = _node_schema(spec, defs)
        branches.append({"if": {"properties": {"type": {"const": type_name}}, "required": ["type"]},
                         "then": {"$ref": f"#/$defs/{name}"}})
    defs["node"] = {
        "type": "object",
        "properties": {"type": {"enum": type_names, "description": "the node type (pack.name)"}},
        "required": ["type"],
        "allOf": branches,
    }
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": "https://nodegraph.invalid/schema/graph-v1.json",
        "title": "nodegraph graph file",
        "type": "object",
        "properties": {
            "version": {"enum": list(SUPPORTED_VERSIONS)},
            "description": {"type": "string"},
            "params": {"type": "object", "propertyNames": {"pattern": f"^{ID_PATTERN}$"},
                       "additionalProperties": {"$ref": "#/$defs/param"}},
            "nodes": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": f"^{ID_PATTERN}$"},
                      "additionalProperties": {"$ref": "#/$defs/node"}},
            "metadata": {"type": "object"},
            "runtime": {"type": "object", "description": "device, dtype, optimize and per-node settings"},
        },
        "required": ["version", "nodes"],
        "propertyNames": {"enum": list(TOP_LEVEL_KEYS)},
        "$defs": defs,
    }
