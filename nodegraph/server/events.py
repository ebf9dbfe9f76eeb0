"""Events from the worker thread to the WebSocket clients, through the event loop.

The worker calls `publish` (any thread); the hub hands each event to the loop with
`call_soon_threadsafe`, where every listener sees it in publish order: the native WebSocket
fan-out and the ComfyUI translator. A slow client gets a bounded queue; one that falls that far
behind is disconnected rather than allowed to grow the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("nodegraph.server")

Event = dict[str, Any]
Listener = Callable[[Event], None]
CLIENT_QUEUE = 2000  # messages one WebSocket client may fall behind before it is dropped


class EventHub:
    """Fan-out of job events to listeners on one event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Listener] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on `loop` from now on (called at server start-up)."""
        self._loop = loop

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, event: Event) -> None:
        """Send `event` to every listener, from any thread (dropped when no loop is bound yet)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:  # the loop closed between the check and the call (shutdown)
            return

    def _deliver(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one broken listener must not silence the others
                log.exception("event listener failed on %s", event.get("type"))


class Subscribers:
    """The queues of the connected WebSocket clients of one API (native or ComfyUI)."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[Event | None]] = {}

    def add(self, client: str) -> asyncio.Queue[Event | None]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue(CLIENT_QUEUE)
        old = self._queues.pop(client, None)
        if old is not None:
            _close(old)  # a client reconnecting under the same id replaces its old connection
        self._queues[client] = queue
        return queue

    def remove(self, client: str, queue: asyncio.Queue[Event | None]) -> None:
        if self._queues.get(client) is queue:
            del self._queues[client]

    def send(self, message: Event, client: str | None = None) -> None:
        """Queue `message` for one client (`client`) or all (None); drops clients that fell behind."""
        targets = [client] if client is not None else list(self._queues)
        for name in targets:
            queue = self._queues.get(name)
            if queue is None:
                continue
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                log.warning("WebSocket client %s fell %d messages behind: disconnected", name, CLIENT_QUEUE)
                del self._queues[name]
                _close(queue)

    def __len__(self) -> int:
        return len(self._queues)


def _close(queue: asyncio.Queue[Event | None]) -> None:
    """Tell the connection's sender to stop (None is the end marker), making room for it if needed."""
    while True:
        try:
            queue.put_nowait(None)
            return
        except asyncio.QueueFull:
            queue.get_nowait()
