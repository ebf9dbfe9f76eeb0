"""A request's graph (text, a served file's name, a PNG, a ComfyUI workflow) -> a validated `Plan`.

Everything here runs before a job is queued, so a bad graph is answered 400 with the same
file/node/field records `nodegraph validate` prints. Text is parsed with the document layer's own
readers (line numbers kept); other tools' workflows go through the `nodegraph.importers` entry
points, as `nodegraph run` does; the server knows no pack. Relative file names in a submitted graph
are read from the graphs folder (a ComfyUI workflow: from the inputs folder, ComfyUI's `input/`).
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodegraph.cli import importers
from nodegraph.document.load import build_plan
from nodegraph.document.plan import Plan
from nodegraph.document.source import parse_json, parse_yaml
from nodegraph.errors import GraphError, NodeFailed, NodegraphError, Problem
from nodegraph.nodes.registry import Registry
from nodegraph.runtime.placement import runtime_settings
from nodegraph.server.paths import OutsideFolder, check_file_inputs, inside
from nodegraph.server.settings import ServeSettings

GRAPH_SUFFIXES = (".yaml", ".yml", ".json")
PLAN_CACHE = 64


class RequestError(NodegraphError):
    """A request the server cannot take (400), with its error records."""

    def __init__(self, records: list[dict[str, Any]], status: int = 400) -> None:
        self.records = records
        self.status = status
        super().__init__("; ".join(str(r.get("message")) for r in records))


def record(problem: Problem | str) -> dict[str, Any]:
    """One error record of the API: the CLI's problem as `{file, line, node, field, message}`."""
    if isinstance(problem, str):
        return {"file": None, "line": None, "node": None, "field": None, "message": problem}
    return {"file": problem.file, "line": problem.line, "node": problem.node, "field": problem.field,
            "message": problem.message}


def records_of(exc: NodegraphError) -> list[dict[str, Any]]:
    """The error records of a user-facing error (every problem of a `GraphError`)."""
    if isinstance(exc, RequestError):
        return exc.records
    if isinstance(exc, GraphError):
        return [record(p) for p in exc.problems]
    if isinstance(exc, NodeFailed):
        return [record(exc.problem)]
    problems = getattr(exc, "problems", None)  # an importer's error listing its problems
    if isinstance(problems, list) and problems:
        return [record(str(p)) for p in problems]
    return [record(str(exc))]


def bad(message: str, field: str | None = None) -> RequestError:
    return RequestError([{"file": None, "line": None, "node": None, "field": field, "message": message}])


@dataclass(frozen=True)
class Loaded:
    """What a request's graph became: the document (for overrides and sweeps) and where it lives."""

    document: Mapping[str, Any] | None  # parsed data (None: `path` is read from disk)
    path: Path | None  # a served graph file
    file: Path  # what relative input names are read against (the plan's `file`)
    name: str  # how errors and the job name it
    graph: str | None  # the graphs-folder name when submitted by name
    format: str  # "nodegraph" or the importer's format name ("comfyui")
    text: str | None = None  # the text as sent (YAML/JSON)


class GraphSources:
    """Turns request bodies into plans, checked against the served folders."""

    def __init__(self, registry: Registry, settings: ServeSettings) -> None:
        self.registry = registry
        self.settings = settings
        self.importers = importers.importers()  # read once: scanning entry points costs ~15 ms a request
        # plans of served graph files by (name, size, mtime, overrides): re-parsing the same file for
        # every job of a burst would cost more than running an all-cached graph; plans are immutable
        self._plans: OrderedDict[tuple[Any, ...], Plan] = OrderedDict()
        self._plans_lock = threading.Lock()

    def roots(self) -> list[Path]:
        s = self.settings
        return [s.graphs, s.inputs, *s.models]

    # -- reading ----------------------------------------------------------------------------------
    def from_body(self, body: Mapping[str, Any]) -> Loaded:
        """The graph a native request names: exactly one of `text`, `graph`, `png_base64`."""
        given = [k for k in ("text", "graph", "png_base64") if body.get(k) is not None]
        if len(given) != 1:
            raise bad("send exactly one of 'text', 'graph' or 'png_base64'")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise bad("'name' must be a string", "name")
        if given[0] == "graph":
            return self.served(body["graph"])
        if given[0] == "png_base64":
            return self.from_png(body["png_base64"], name or "upload.png")
        text = body["text"]
        if not isinstance(text, str):
            raise bad("'text' must be a string", "text")
        return self.from_text(text, name or "submitted.yaml")

    def served(self, name: Any) -> Loaded:
        """A graph file of the graphs folder, by its name there."""
        if not isinstance(name, str) or not name.lower().endswith(GRAPH_SUFFIXES):
            raise RequestError([record(f"'{name}' is not a graph name (.yaml, .yml or .json)")], 404)
        try:
            path = inside(self.settings.graphs, name)
        except OutsideFolder:
            raise RequestError([record(f"graph '{name}' is not in the graphs folder")], 404) from None
        if not path.is_file():
            raise RequestError([record(f"graph '{name}' is not in the graphs folder")], 404)
        imported = self._imported(path, name)
        if imported is not None:
            return imported
        return Loaded(None, path, path, name, name, "nodegraph")

    def from_text(self, text: str, name: str) -> Loaded:
        """Pasted YAML/JSON: a nodegraph graph, or another tool's workflow an importer recognises."""
        try:
            rel = Path(name).name or "submitted.yaml"
        except (TypeError, ValueError):
            rel = "submitted.yaml"
        if text.lstrip().startswith("{"):  # JSON: another tool's workflow? (its importer decides)
            if not rel.lower().endswith(".json"):
                rel = Path(rel).stem + ".json"
            imported = self._imported_text(text, rel)
            if imported is not None:
                return imported
        return Loaded(None, None, self.settings.graphs / rel, rel, None, "nodegraph", text)

    def from_workflow(self, workflow: Any, name: str = "prompt.json") -> Loaded:
        """A ComfyUI API-format workflow sent to `/prompt` (through the `comfyui` importer)."""
        if not isinstance(workflow, dict) or not workflow:
            raise bad("'prompt' must be a ComfyUI API-format workflow (an object of nodes)", "prompt")
        importer = self.importers.get("comfyui")
        if importer is None:
            raise bad("ComfyUI workflows need the ComfyUI importer (the `comfyui` entry point of the "
                      f"`{importers.ENTRY_POINT_GROUP}` group); installed: "
                      f"{', '.join(self.importers) or 'none'}")
        with tempfile.TemporaryDirectory(prefix="nodegraph-serve-") as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(workflow), encoding="utf-8")
            graph = importer.convert(path)
        return Loaded(graph, None, self.settings.inputs / name, name, None, "comfyui")

    def from_png(self, data: Any, name: str) -> Loaded:
        """A PNG written by nodegraph (its graph rides in a text chunk), or one an importer reads."""
        from nodegraph.runtime.metadata import metadata_from_png

        if not isinstance(data, str):
            raise bad("'png_base64' must be a base64 string", "png_base64")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise bad("'png_base64' is not valid base64", "png_base64") from None
        stem = Path(Path(name).name).stem or "upload"
        with tempfile.TemporaryDirectory(prefix="nodegraph-serve-") as tmp:
            path = Path(tmp) / f"{stem}.png"
            path.write_bytes(raw)
            try:
                meta = metadata_from_png(path)
            except (OSError, ValueError, SyntaxError) as exc:
                raise bad(f"not a readable PNG: {exc}", "png_base64") from None
            graph = meta.get("graph") if meta else None
            if isinstance(graph, dict):
                return Loaded(graph, None, self.settings.graphs / f"{stem}.yaml", f"{stem}.png", None,
                              "nodegraph")
            imported = self._imported(path, f"{stem}.png")
        if imported is None:
            raise bad("this PNG carries no graph nodegraph can read (it was not written by "
                      "core.save_image, nor by a tool an importer knows)", "png_base64")
        return imported

    def _imported_text(self, text: str, name: str) -> Loaded | None:
        with tempfile.TemporaryDirectory(prefix="nodegraph-serve-") as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            return self._imported(path, name)

    def _imported(self, path: Path, name: str) -> Loaded | None:
        """The converted graph when an importer recognises the file at `path`, else None."""
        found = next(((n, i) for n, i in self.importers.items() if path.is_file() and i.detect(path)), None)
        if found is None:
            return None
        fmt, importer = found
        graph = importer.convert(path)
        return Loaded(graph, None, self.settings.inputs / Path(name).name, name, None, fmt)

    # -- validating -------------------------------------------------------------------------------
    def plan(self, loaded: Loaded, overrides: Mapping[str, Any] | None = None) -> Plan:
        """Parse, apply overrides, validate; check that the graph reads only served files."""
        overrides = dict(overrides or {})
        key = None
        if loaded.path is not None and loaded.document is None:
            st = loaded.path.stat()
            key = (str(loaded.path), st.st_size, st.st_mtime_ns,
                   json.dumps(overrides, sort_keys=True, default=str))
            with self._plans_lock:
                if key in self._plans:
                    self._plans.move_to_end(key)
                    return self._plans[key]
        plan = self._load(loaded, overrides)
        if key is not None:
            with self._plans_lock:
                self._plans[key] = plan
                while len(self._plans) > PLAN_CACHE:
                    self._plans.popitem(last=False)
        return plan

    def _load(self, loaded: Loaded, overrides: dict[str, Any]) -> Plan:
        if loaded.document is not None:
            from nodegraph.document.load import load_plan

            plan = load_plan(loaded.document, self.registry, overrides, file=loaded.file)
        elif loaded.path is not None:
            from nodegraph.document.load import load_plan

            plan = load_plan(loaded.path, self.registry, overrides)
        else:
            plan = self._from_text(loaded, overrides)
        runtime_settings(plan)  # a bad `runtime:` block is a validation error, as in `nodegraph validate`
        check_file_inputs(plan, self.roots())
        return plan

    def _from_text(self, loaded: Loaded, overrides: dict[str, Any]) -> Plan:
        assert loaded.text is not None
        parse = parse_json if loaded.name.lower().endswith(".json") else parse_yaml
        src, problems = parse(loaded.text, loaded.name)
        if src is None:
            raise GraphError(problems)
        plan, more = build_plan(src, self.registry, overrides, loaded.file)
        problems = problems + more
        if problems or plan is None:
            raise GraphError(problems or [Problem("the graph could not be loaded", file=loaded.name)])
        return plan


def override_texts(values: Any, field: str = "set") -> dict[str, Any]:
    """A request's `set` object: JSON scalars kept as they are, everything else refused."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise bad(f"'{field}' must be an object of name: value", field)
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise bad(f"'{field}' keys must be param names or node.input", field)
        if isinstance(value, (dict, list)):
            raise bad(f"'{field}.{key}' must be a single value (use 'sweep' for several)", field)
        out[key] = value
    return out


def cli_text(value: Any) -> str:
    """A value as `--set` would take it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)
