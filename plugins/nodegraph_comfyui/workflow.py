"""Read a ComfyUI workflow (API JSON, UI/litegraph JSON, or a PNG carrying either) into one form.

Why one form: the API format (`{id: {class_type, inputs}}`, links as `[id, slot]`) is what ComfyUI
executes, so the UI format is reduced to it here (positional widget values named from the class's
widget table, Reroute/Primitive/bypassed nodes resolved, notes dropped). Everything downstream sees
the same `Workflow` whichever file it came from, which is what makes UI and API files of one
workflow import to the same graph. Pure standard library: this runs at validation time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodegraph.api import NodegraphError
from nodegraph_comfyui.png import NotPng, is_png, text_chunks
from nodegraph_comfyui.widgets import widget_inputs

UI_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "PrimitiveInt", "PrimitiveString"})
MUTED, BYPASSED = 2, 4  # litegraph node modes: never run / pass inputs through


@dataclass(frozen=True)
class Link:
    """An input fed by output `slot` of node `node`."""

    node: str
    slot: int


@dataclass
class WfNode:
    """One node in API form: its class and inputs (literals or `Link`s)."""

    id: str
    class_type: str
    inputs: dict[str, Any]
    title: str | None = None


@dataclass
class Workflow:
    """A workflow in API form, what it was read from, and what could not be read."""

    nodes: dict[str, WfNode]
    format: str  # "api" or "ui"
    file: str | None = None
    problems: list[tuple[str | None, str]] = field(default_factory=list)  # (node id, message)


def sniff(data: Any) -> str | None:
    """'api', 'ui' or None: which ComfyUI format parsed JSON data is in."""
    if isinstance(data, Mapping):
        if isinstance(data.get("prompt"), Mapping) and _is_api(data["prompt"]):
            return "api"
        if isinstance(data.get("nodes"), list) and "links" in data:
            return "ui"
        if data and _is_api(data):
            return "api"
    return None


def _is_api(data: Mapping[str, Any]) -> bool:
    return bool(data) and all(isinstance(v, Mapping) and "class_type" in v for v in data.values())


def detect(path: Path) -> bool:
    """Whether `path` is a ComfyUI workflow file (JSON in either format, or a PNG carrying one)."""
    try:
        if is_png(path):
            chunks = text_chunks(path)
            return "nodegraph" not in chunks and ("prompt" in chunks or "workflow" in chunks)
        if path.suffix.lower() != ".json" or path.stat().st_size > 64 * 1024 * 1024:
            return False
        return sniff(json.loads(path.read_text(encoding="utf-8"))) is not None
    except (OSError, ValueError, NotPng):
        return False


def load_data(path: Path) -> Any:
    """The workflow JSON of a file: the file itself, or a PNG's `prompt` (preferred) / `workflow` chunk."""
    try:
        if is_png(path):
            chunks = text_chunks(path)
            text = chunks.get("prompt") or chunks.get("workflow")
            if text is None:
                raise NodegraphError(
                    f"{path}: this PNG carries no ComfyUI workflow ('prompt' or 'workflow' text chunk)"
                )
            return json.loads(text)
        return json.loads(path.read_text(encoding="utf-8"))
    except NotPng as exc:
        raise NodegraphError(str(exc)) from exc
    except OSError as exc:
        raise NodegraphError(f"cannot read '{path}': {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise NodegraphError(f"{path}: not valid JSON ({exc})") from exc


def read_workflow(data: Any, widgets: Mapping[str, tuple[str, ...]], file: str | None = None) -> Workflow:
    """Parsed JSON of either format to a `Workflow`; `widgets` names each class's positional widgets."""
    kind = sniff(data)
    if kind == "api":
        return _from_api(data.get("prompt") if isinstance(data.get("prompt"), Mapping) else data, file)
    if kind == "ui":
        return _from_ui(data, widgets, file)
    raise NodegraphError(
        f"{file or 'data'}: not a ComfyUI workflow (neither the API format "
        "{id: {class_type, inputs}} nor the UI format {nodes, links})"
    )


def _from_api(data: Mapping[str, Any], file: str | None) -> Workflow:
    flow = Workflow({}, "api", file)
    for node_id, body in data.items():
        inputs = body.get("inputs", {})
        if not isinstance(inputs, Mapping) or not isinstance(body.get("class_type"), str):
            flow.problems.append((str(node_id), "needs a class_type text and an inputs mapping"))
            continue
        meta = body.get("_meta")
        title = meta.get("title") if isinstance(meta, Mapping) else None
        parsed = {name: _api_value(value, data) for name, value in inputs.items()}
        flow.nodes[str(node_id)] = WfNode(str(node_id), body["class_type"], parsed, title)
    return flow


def _api_value(value: Any, data: Mapping[str, Any]) -> Any:
    """A `Link` for `[id, slot]` naming a node of the prompt; anything else is a literal."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and str(value[0]) in data
    ):
        return Link(str(value[0]), value[1])
    return value


def _from_ui(data: Mapping[str, Any], widgets: Mapping[str, tuple[str, ...]], file: str | None) -> Workflow:
    flow = Workflow({}, "ui", file)
    if (data.get("definitions") or {}).get("subgraphs"):
        flow.problems.append(
            (
                None,
                "the file holds subgraphs, which the UI reader does not expand yet: "
                "export it in API format (Workflow > Export (API)) and import that",
            )
        )
    raw = {str(n.get("id")): n for n in data.get("nodes", []) if isinstance(n, Mapping)}
    links: dict[int, tuple[str, int]] = {}
    for row in data.get("links", []) or []:
        if isinstance(row, list) and len(row) >= 5:
            links[row[0]] = (str(row[1]), int(row[2]))
        elif isinstance(row, Mapping):  # newer front ends: {id, origin_id, origin_slot, ...}
            links[row.get("id")] = (str(row.get("origin_id")), int(row.get("origin_slot", 0)))
    for node_id, node in raw.items():
        kind = node.get("type")
        if not isinstance(kind, str) or kind in UI_ONLY or node.get("mode") in (MUTED, BYPASSED):
            continue
        values = node.get("widgets_values")
        if isinstance(values, Mapping):
            inputs: dict[str, Any] = dict(values)
        elif kind in widgets:
            inputs = widget_inputs(widgets[kind], list(values or []))
        else:
            inputs = {}
            if values:
                flow.problems.append(
                    (
                        node_id,
                        f"cannot name the widget values of class '{kind}' (no "
                        "widget table): export the workflow in API format",
                    )
                )
        for entry in node.get("inputs", []) or []:
            link = entry.get("link") if isinstance(entry, Mapping) else None
            if link is None:
                continue
            source = _resolve(links.get(link), raw, links, set())
            if source is not None:
                inputs[entry.get("name")] = source
        flow.nodes[node_id] = WfNode(node_id, kind, inputs, node.get("title"))
    return flow


def _resolve(
    source: tuple[str, int] | None,
    raw: Mapping[str, Any],
    links: Mapping[int, tuple[str, int]],
    seen: set[str],
) -> Any:
    """Follow a link through Reroutes, Primitives (their value) and bypassed nodes to what feeds it."""
    if source is None or source[0] in seen or source[0] not in raw:
        return None
    node_id, slot = source
    node = raw[node_id]
    kind, mode = node.get("type"), node.get("mode")
    if kind == "Reroute" or mode == BYPASSED:
        wanted = _output_type(node, slot)
        for entry in node.get("inputs", []) or []:
            if entry.get("link") is not None and (kind == "Reroute" or entry.get("type") == wanted):
                return _resolve(links.get(entry["link"]), raw, links, seen | {node_id})
        return None
    if kind in UI_ONLY:  # a Primitive: the value it holds
        values = node.get("widgets_values") or [None]
        return values[0] if isinstance(values, list) else None
    return Link(node_id, slot)


def _output_type(node: Mapping[str, Any], slot: int) -> Any:
    outputs = node.get("outputs") or []
    return outputs[slot].get("type") if slot < len(outputs) and isinstance(outputs[slot], Mapping) else None
