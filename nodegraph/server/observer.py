"""The engine's callbacks for one job, turned into job state and events.

Implements the executor's `RunObserver` (node started / finished) and the runtime's `ProgressSink`
(a node's step bar: the sampler advances it once per UNet call), the same two hooks the CLI's rich
bars use, and the sink's optional `preview` (the sampler's latent preview per step, sent as a small
PNG with the step event). It runs on the worker thread; `emit` hands events to the hub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodegraph.runtime.report import NodeEvent
from nodegraph.server.jobs import Job


def png_data_url(image: Any) -> str | None:
    """An RGB uint8 array as a `data:image/png;base64,...` URL (None when it is not one)."""
    import base64
    import io

    from PIL import Image

    try:
        picture = Image.fromarray(image)
    except (TypeError, ValueError):
        return None
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class JobObserver:
    """Progress of one job: updates `job.nodes` / `job.step` and emits native events."""

    def __init__(self, job: Job, emit: Callable[[dict[str, Any]], None]) -> None:
        self.job = job
        self.emit = emit
        self.current: str | None = None  # the node running now (to blame when it raises)

    def _event(self, type_: str, **fields: Any) -> None:
        self.emit({"type": type_, "job": self.job.id, **fields})

    # RunObserver
    def run_started(self, total: int) -> None:
        return None

    def node_started(self, node_id: str, type_name: str) -> None:
        self.current = node_id
        self.job.nodes[node_id] = "running"
        self._event("node_started", node=node_id, node_type=type_name)

    def node_finished(self, event: NodeEvent) -> None:
        self.current = None
        if event.status == "cached":
            self.job.nodes[event.node] = "cached"
            self._event("node_cached", node=event.node)
        else:
            self.job.nodes[event.node] = "done"
            self._event("node_finished", node=event.node, wall_ms=event.wall_ms)

    # ProgressSink
    def start_task(self, node_id: str, description: str, total: int) -> Any:
        self.job.step = (0, total)
        return [node_id, 0, total, None]  # node, step, total, the preview for the next step event

    def preview(self, task: Any, image: Any) -> None:
        """A node's preview of its work so far (RGB uint8 array): sent with the next step event."""
        task[3] = png_data_url(image)

    def advance(self, task: Any, amount: int = 1) -> None:
        task[1] += amount
        node_id, step, total, preview = task
        task[3] = None
        self.job.step = (step, total)
        self._event("step", node=node_id, step=step, total=total, preview=preview)

    def finish_task(self, task: Any) -> None:
        self.job.step = None
