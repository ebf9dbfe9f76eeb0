"""`GET /object_info`: the registry's node types described in ComfyUI's schema.

ComfyUI clients read it to list node classes and their widgets; here every nodegraph node type is
one class (its type name), literal inputs become ComfyUI widget types (INT, FLOAT, STRING, BOOLEAN,
a list of choices) with their defaults and ranges, port inputs the port type's name in capitals.
"""

from __future__ import annotations

from typing import Any

from nodegraph.nodes.registry import Registry
from nodegraph.nodes.spec import MISSING, InputSpec, NodeSpec, type_name_of

_WIDGETS = {"integer": "INT", "number": "FLOAT", "string": "STRING", "boolean": "BOOLEAN"}


def _widget(ispec: InputSpec) -> list[Any]:
    """ComfyUI's `[TYPE, {options}]` for one input."""
    options: dict[str, Any] = {}
    if ispec.description:
        options["tooltip"] = ispec.description
    kind: Any = type_name_of(ispec.port_type).upper()
    if ispec.literal_adapter is not None and not ispec.is_list:
        try:
            schema = ispec.literal_adapter.json_schema()
        except Exception:  # noqa: BLE001 - pydantic raises several kinds for exotic types
            schema = {}
        variants = schema.get("anyOf", [schema])
        plain: dict[str, Any] = next((v for v in variants if v.get("type") != "null"), {})
        if "enum" in plain:
            kind = list(plain["enum"])
        elif plain.get("type") in _WIDGETS:
            kind = _WIDGETS[plain["type"]]
            for key, name in (("minimum", "min"), ("maximum", "max"), ("exclusiveMinimum", "min"),
                              ("exclusiveMaximum", "max")):
                if key in plain:
                    options[name] = plain[key]
    if ispec.default is not MISSING and isinstance(ispec.default, (bool, int, float, str)):
        options["default"] = ispec.default
    return [kind, options] if options else [kind]


def node_info(spec: NodeSpec) -> dict[str, Any]:
    """One node type as ComfyUI's `node_info` shapes a class."""
    required = {n: _widget(i) for n, i in spec.inputs.items() if i.required}
    optional = {n: _widget(i) for n, i in spec.inputs.items() if not i.required}
    outputs = list(spec.outputs.values())
    return {
        "input": {"required": required, "optional": optional},
        "input_order": {"required": list(required), "optional": list(optional)},
        "output": [type_name_of(o.type).upper() for o in outputs],
        "output_is_list": [False] * len(outputs),
        "output_name": [o.name for o in outputs],
        "name": spec.type_name,
        "display_name": spec.type_name,
        "description": spec.description,
        "python_module": spec.pack,
        "category": spec.pack or spec.type_name.split(".", 1)[0],
        "output_node": spec.side_effects,
    }


def object_info(registry: Registry, only: str | None = None) -> dict[str, Any]:
    """Every node type (or just `only`, when known) by type name."""
    names = [only] if only is not None else list(registry)
    return {name: node_info(spec) for name in names if (spec := registry.get(name)) is not None}
