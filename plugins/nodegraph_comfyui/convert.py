"""Turn a `Workflow` (API form) into a nodegraph graph document, reporting every problem at once.

How: each ComfyUI class has a `ClassMapping` whose `convert` function emits nodegraph nodes through
a `Converter` and returns what each of its output slots carries. Conversion starts from the output
nodes (SaveImage, PreviewImage, ...) and pulls inputs on demand, as ComfyUI executes only what
leads to an output, so dangling nodes are dropped. Some ComfyUI values are not nodegraph values:
a MODEL is a UNet plus the loader it came from, a CLIP is a text encoder plus a clip-skip
(CLIPSetLastLayer), a CONDITIONING is a prompt encoding plus the ControlNet units attached to it;
those travel as the small symbolic values below until a sampler or encoder consumes them.
Node ids become readable names, literal widget values chosen by each mapping become `params`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodegraph.api import NodegraphError
from nodegraph_comfyui.workflow import Link, WfNode, Workflow


class ConversionError(NodegraphError):
    """A workflow that cannot be converted, with every problem found (node, class, field, message)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Model:
    """A ComfyUI MODEL: a UNet link, and the loader node whose scheduler/text encoder go with it."""

    unet: str
    loader: str


@dataclass(frozen=True)
class Clip:
    """A ComfyUI CLIP: a text encoder link, and how many final layers CLIPSetLastLayer skips."""

    encoder: str
    skip: int = 0


@dataclass(frozen=True)
class Cond:
    """A ComfyUI CONDITIONING: an encode_text link and the control units attached to it."""

    ref: str
    controls: tuple[str, ...] = ()


Convert = Callable[["Converter", WfNode], list[Any]]


@dataclass(frozen=True)
class ClassMapping:
    """How one ComfyUI class becomes nodegraph nodes (what a pack provides for its ComfyUI twins).

    `widgets`: the class's widget inputs in UI order (`widgets.CONTROL` where a seed has its
    control_after_generate entry); `output`: whether ComfyUI treats it as an output node (conversion
    starts there); `nodegraph`/`notes`: for the docs table and `nodegraph import --list`.
    """

    class_type: str
    convert: Convert
    widgets: tuple[str, ...] = ()
    output: bool = False
    nodegraph: str = ""
    notes: str = ""


@dataclass
class Converter:
    """One conversion: the nodes and params emitted so far and the problems found."""

    flow: Workflow
    mappings: Mapping[str, ClassMapping]
    hints: Mapping[str, str] = field(default_factory=dict)  # class_type -> "usually from package X"
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)  # workflow id -> "positive" / "negative"
    origins: dict[str, str] = field(default_factory=dict)  # emitted node -> the workflow node it serves
    input_dirs: tuple[Path, ...] = ()  # ComfyUI input/ folders, searched for LoadImage's files
    _values: dict[str, list[Any]] = field(default_factory=dict)
    _active: set[str] = field(default_factory=set)
    _stack: list[str] = field(default_factory=list)

    # -- used by the mappings -------------------------------------------------------------
    def add(self, hint: str, type_name: str, **inputs: Any) -> str:
        """Emit a nodegraph node named after `hint` (made unique); returns its name."""
        base = re.sub(r"[^A-Za-z0-9_-]", "_", hint) or "node"
        if not re.match(r"[A-Za-z_]", base):
            base = "n_" + base
        name, n = base, 2
        while name in self.nodes:
            name, n = f"{base}_{n}", n + 1
        self.nodes[name] = {"type": type_name, **{k: v for k, v in inputs.items() if v is not None}}
        if self._stack:
            self.origins[name] = self._stack[-1]
        return name

    def input_file(self, name: str) -> str:
        """An input image's path: as given when it is beside the workflow (or absolute), else the first
        ComfyUI input/ folder holding it (absolute), else as given (the loader then reports it)."""
        given = Path(name).expanduser()
        base = Path(self.flow.file).parent if self.flow.file else Path.cwd()
        if given.is_absolute() or (base / given).exists():
            return name
        found = next((d / given for d in self.input_dirs if (d / given).is_file()), None)
        return str(found.resolve()) if found is not None else name

    def param(self, key: str, value: Any, description: str, **decl: Any) -> str:
        """Lift a literal into a param (`key`, else `key_2`, ...) and return its `$ref`."""
        name, n = key, 2
        while name in self.params:
            name, n = f"{key}_{n}", n + 1
        kind = decl.pop("type", None) or _param_type(value)
        self.params[name] = {"type": kind, "default": value, "description": description, **decl}
        return "$" + name

    def input(self, node: WfNode, name: str, default: Any = ..., *, kind: type | None = None) -> Any:
        """The value of an input: a link's converted value, else the literal, else `default`."""
        if name not in node.inputs:
            if default is ...:
                self.problem(node, f"input '{name}' is missing", name)
                return None
            return default
        value = node.inputs[name]
        if isinstance(value, Link):
            got = self.value(value, node, name)
            if kind is not None and got is not None and not isinstance(got, kind):
                self.problem(node, f"input '{name}' must come from a {kind.__name__.upper()} output", name)
                return None
            return got
        return value

    def literal(self, node: WfNode, name: str, default: Any = ...) -> Any:
        """A widget value that must be a literal (a link there has no nodegraph counterpart)."""
        value = node.inputs.get(name, default)
        if value is ...:
            self.problem(node, f"input '{name}' is missing", name)
            return None
        if isinstance(value, Link):
            self.problem(
                node,
                f"input '{name}' is linked from node '{value.node}'; only a literal value is supported here",
                name,
            )
            return None
        return value

    def problem(self, node: WfNode | None, message: str, input_name: str | None = None) -> None:
        """Record a problem naming the workflow node (id and class) and the input."""
        where = self.flow.file + ": " if self.flow.file else ""
        if node is not None:
            where += f"node '{node.id}' ({node.class_type})"
            where += f", input '{input_name}'" if input_name else ""
            where += ": "
        self.problems.append(where + message)

    # -- the walk ------------------------------------------------------------------------
    def value(self, link: Link, consumer: WfNode, input_name: str) -> Any:
        """What output `link.slot` of `link.node` carries, converting that node first if needed."""
        source = self.flow.nodes.get(link.node)
        if source is None:
            self.problem(consumer, f"links to node '{link.node}', which the workflow lacks", input_name)
            return None
        outputs = self.convert_node(source)
        if outputs is None:
            return None
        if not 0 <= link.slot < len(outputs):
            self.problem(
                consumer,
                f"links to output {link.slot} of node '{link.node}' "
                f"({source.class_type}), which has {len(outputs)}",
                input_name,
            )
            return None
        slot = outputs[link.slot]
        if callable(slot) and not isinstance(slot, (str, Model, Clip, Cond)):
            slot = outputs[link.slot] = slot()  # made on first use (e.g. LoadImage's mask)
        return slot

    def convert_node(self, node: WfNode) -> list[Any] | None:
        """Convert one workflow node once; None when it cannot be (the problem is recorded)."""
        if node.id in self._values:
            return self._values[node.id]
        if node.id in self._active:
            self.problem(node, "is part of a cycle")
            return None
        mapping = self.mappings.get(node.class_type)
        if mapping is None:
            return None  # reported once for all unknown classes (run())
        self._active.add(node.id)
        self._stack.append(node.id)
        try:
            outputs = mapping.convert(self, node)
        finally:
            self._active.discard(node.id)
            self._stack.pop()
        self._values[node.id] = outputs
        return outputs

    def run(self) -> None:
        """Convert everything that leads to an output node; unknown classes are reported together."""
        label = self.flow.file or "workflow"
        for node_id, message in self.flow.problems:
            if node_id in self.flow.nodes:
                self.problem(self.flow.nodes[node_id], message)
            else:
                self.problems.append(
                    f"{label}: node '{node_id}': {message}" if node_id else f"{label}: {message}"
                )
        unknown = sorted(
            {n.class_type for n in self.flow.nodes.values() if n.class_type not in self.mappings}
        )
        for class_type in unknown:
            ids = [n.id for n in self.flow.nodes.values() if n.class_type == class_type]
            which = f"node{'s' if len(ids) > 1 else ''} {', '.join(repr(i) for i in ids)}"
            hint = self.hints.get(class_type)
            if hint is None:
                why = f"custom class '{class_type}': no installed nodegraph pack maps it"
            elif hint.startswith("core"):
                why = f"ComfyUI core class '{class_type}' has no nodegraph counterpart yet{hint[4:]}"
            else:
                why = (
                    f"custom class '{class_type}' (from the ComfyUI package {hint}): no installed "
                    "nodegraph pack maps it"
                )
            self.problems.append(f"{label}: {which}: {why}")
        self.roles = find_roles(self.flow)
        outputs = [
            n
            for n in self.flow.nodes.values()
            if n.class_type in self.mappings and self.mappings[n.class_type].output
        ]
        if not outputs and not unknown:
            self.problems.append(f"{self.flow.file or 'workflow'}: no output node (SaveImage, PreviewImage)")
        for node in sorted(outputs, key=lambda n: natural_key(n.id)):
            self.convert_node(node)


def natural_key(node_id: str) -> list[Any]:
    """'9' before '10', '20:6' after '20': ComfyUI ids sorted as a person would."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", node_id) if part
    ]


def find_roles(flow: Workflow) -> dict[str, str]:
    """Which text-encode nodes feed a sampler's positive or negative side (for names and params)."""
    roles: dict[str, str] = {}
    for node in sorted(flow.nodes.values(), key=lambda n: natural_key(n.id)):
        for side in ("positive", "negative"):
            link = node.inputs.get(side)
            if isinstance(link, Link) and "text" not in node.inputs:
                _mark(flow, link, side, roles, set())
    return roles


def _mark(flow: Workflow, link: Link, side: str, roles: dict[str, str], seen: set[str]) -> None:
    node = flow.nodes.get(link.node)
    if node is None or node.id in seen:
        return
    if "text" in node.inputs or "text_g" in node.inputs:
        roles.setdefault(node.id, side)
        return
    names = [k for k in node.inputs if k.startswith("conditioning")]
    if "positive" in node.inputs and "negative" in node.inputs:  # ControlNetApplyAdvanced: 0 = +, 1 = -
        names.append("positive" if link.slot == 0 else "negative")
    for name in names:
        upstream = node.inputs.get(name)
        if isinstance(upstream, Link):
            _mark(flow, upstream, side, roles, seen | {node.id})


def _param_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"
