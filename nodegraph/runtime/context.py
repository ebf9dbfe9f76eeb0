"""What a running node may use: devices, residency, progress, safe output paths.

One `RunContext` per run (settings and services passed in, no module state); each node call gets a
`NodeContext` view of it naming that node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from nodegraph.errors import InputError, NodegraphError
from nodegraph.runtime.placement import NodePlacement
from nodegraph.runtime.residency import ResidencyManager
from nodegraph.runtime.staging import staged_target


@dataclass(frozen=True)
class RunOptions:
    """Settings of one run, as given on the command line or to `Engine.run`."""

    out_dir: Path = Path("out")
    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    model_dirs: tuple[Path, ...] = ()
    show_progress: bool = True
    optimize: str | None = None  # none | basic | compile | max (None: the graph's runtime setting, or none)
    order: str = "smart"  # "smart": group nodes needing the same model; "document": plain topological order


class ProgressSink(Protocol):
    """Where progress goes (rich bars in the CLI, nothing in tests).

    A sink may also have `preview(task, image)`: it then receives the small RGB previews (uint8 numpy
    arrays, H x W x 3) that long nodes offer with their steps (the server sends them to its clients).
    """

    def start_task(self, node_id: str, description: str, total: int) -> Any: ...
    def advance(self, task: Any, amount: int = 1) -> None: ...
    def finish_task(self, task: Any) -> None: ...


class NullProgress:
    def start_task(self, node_id: str, description: str, total: int) -> Any:
        return None

    def advance(self, task: Any, amount: int = 1) -> None:
        return None

    def finish_task(self, task: Any) -> None:
        return None


class Cancelled(NodegraphError):
    """The run was interrupted (Ctrl-C); nothing was written."""


def safe_relative(path: str) -> PurePosixPath:
    """Check that an output path stays inside the output folder; raises InputError otherwise."""
    text = str(path).replace("\\", "/")
    rel = PurePosixPath(text)
    if not text or rel.is_absolute() or text.startswith("~") or ".." in rel.parts or ":" in rel.parts[0]:
        raise InputError(f"output path '{path}' must be relative and stay inside the output folder",
                         field="path")
    if "\x00" in text:
        raise InputError(f"output path {path!r} contains a NUL character", field="path")
    return rel


@dataclass
class RunContext:
    """Services and settings shared by every node of one run."""

    options: RunOptions
    resources: ResidencyManager
    staging_dir: Path
    graph_file: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    progress_sink: ProgressSink = field(default_factory=NullProgress)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    outputs: dict[Path, Path] = field(default_factory=dict)  # staged path -> final path
    output_nodes: dict[Path, str] = field(default_factory=dict)  # staged path -> id of the node writing it
    placement: NodePlacement | None = None  # per-node devices/dtypes (the graph's runtime block)
    notes: list[str] = field(default_factory=list)  # fallbacks taken, said in the run report
    scores: dict[str, float] = field(default_factory=dict)  # node id -> the figure it reported (score())
    _device: Any = None
    _dtype: Any = None
    _outputs_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def base_dir(self) -> Path:
        return self.graph_file.parent if self.graph_file else Path.cwd()

    @property
    def device(self) -> Any:
        if self._device is None:
            from nodegraph.runtime.devices import resolve_device

            self._device = resolve_device(self.options.device)
        return self._device

    @property
    def dtype(self) -> Any:
        if self._dtype is None:
            from nodegraph.runtime.devices import resolve_dtype

            self._dtype = resolve_dtype(self.options.dtype, self.device)
        return self._dtype

    def placed(self, node_id: str) -> tuple[Any, Any]:
        """(device, dtype) of one node: its own override from the graph, else the run's."""
        if self.placement is None or node_id not in self.placement.nodes:
            return self.device, self.dtype
        return self.placement.resolve(node_id)

    def for_node(self, node_id: str, type_name: str) -> NodeContext:
        return NodeContext(self, node_id, type_name)


class NodeContext:
    """The run's services as seen from inside one node call."""

    def __init__(self, run: RunContext, node_id: str, type_name: str) -> None:
        self.run = run
        self.node_id = node_id
        self.type_name = type_name

    @property
    def options(self) -> RunOptions:
        return self.run.options

    @property
    def resources(self) -> ResidencyManager:
        return self.run.resources

    @property
    def device(self) -> Any:
        """The torch device this node should compute on (the graph may place nodes one by one)."""
        return self.run.placed(self.node_id)[0]

    @property
    def dtype(self) -> Any:
        """The torch dtype models should run in on that device."""
        return self.run.placed(self.node_id)[1]

    @property
    def optimize(self) -> str:
        """The speed-option level of this run: none, basic, compile or max."""
        return self.run.options.optimize or "none"

    def note(self, message: str) -> None:
        """Say something the user should know (a fallback taken); it appears in the run report."""
        self.run.notes.append(f"{self.node_id}: {message}")

    def score(self, value: float) -> None:
        """Report this run's figure of merit under the node's id (a CLIP score of the best image, say):
        it is in the run report, and a sweep keeps it in its manifest and ranks variants by it
        (`--rank-by NODE`). Side-effect nodes call it, so it is reported on cached runs too."""
        self.run.scores[self.node_id] = float(value)

    @property
    def metadata(self) -> dict[str, Any]:
        """The fully resolved graph (params, seeds, versions) to embed in saved files."""
        return self.run.metadata

    def input_path(self, path: str | Path) -> Path:
        """Resolve a user-given input file relative to the graph file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.run.base_dir / p)

    def output_path(self, relative: str) -> Path:
        """A path to write one output file to.

        Files are written to a staging folder and moved into the output folder only when the whole run
        succeeds, so a failed or interrupted run leaves no partial outputs.
        """
        rel = safe_relative(relative)
        staged = self.run.staging_dir / rel
        final = self.run.options.out_dir / rel
        with self.run._outputs_lock:  # nodes on different lanes may ask at the same time
            if staged in self.run.outputs:
                raise InputError(f"output path '{relative}' is written twice in this run; give each "
                                 "output its own path", field="path")
            self.run.outputs[staged] = final
            self.run.output_nodes[staged] = self.node_id
        # refuses targets that links would take out of the output (or staging) folder
        return staged_target(self.run.staging_dir, self.run.options.out_dir, rel)

    def check_cancelled(self) -> None:
        """Long loops call this between steps so Ctrl-C stops the run cleanly."""
        if self.run.cancel_event.is_set():
            raise Cancelled("run cancelled")

    @property
    def wants_preview(self) -> bool:
        """Whether the run's progress sink shows previews: compute one per step only then."""
        return callable(getattr(self.run.progress_sink, "preview", None))

    @contextmanager
    def progress(self, total: int, description: str = "") -> Iterator[Callable[..., None]]:
        """A progress bar for a long node; yields `advance(n=1, preview=None)`; checks cancellation on
        each advance. `preview`: a small RGB uint8 array of the work so far, for sinks that show one."""
        sink = self.run.progress_sink
        task = sink.start_task(self.node_id, description or self.type_name, total)
        show = getattr(sink, "preview", None)

        def advance(amount: int = 1, preview: Any = None) -> None:
            self.check_cancelled()
            if preview is not None and callable(show):
                show(task, preview)
            sink.advance(task, amount)

        try:
            yield advance
        finally:
            sink.finish_task(task)
