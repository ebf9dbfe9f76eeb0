"""A real `nodegraph serve` app on loopback for the server tests (uvicorn on a thread), one per module.

- `server_engine` (session): one `Engine` over the installed packs plus `servertest.crash`, a node that
  raises a plain RuntimeError (a pack bug, not a user error), so model loads are shared across modules.
- `make_server(**settings)`: starts a server on a free loopback port with its own out/input folders and
  a graphs folder holding the shipped txt2img graph; the running servers stop at the end of the module.
- `LiveServer`: `url`, `state`, `get/post/delete` (requests), `events()` (a WebSocket on /api/events),
  `wait(job_id)` (polls until the job has finished).
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"steps": 2, "width": 32, "height": 32}
CRASH_GRAPH = "version: 1\nnodes:\n  boom: {type: servertest.crash, value: 3}\n"


def crash_registry() -> Any:
    from types import ModuleType

    from nodegraph.api import hookimpl, node
    from nodegraph.nodes.registry import PackSource, build_registry, entry_point_sources

    @node("servertest.crash", version="1.0.0")
    def crash(value: Annotated[int, Field(description="Ignored")] = 0) -> int:
        """Raise a RuntimeError: a bug in a node, which must fail the job and not the server."""
        raise RuntimeError(f"node bug {value}")

    module = ModuleType("nodegraph_servertest_nodes")
    crash.__module__ = module.__name__
    module.crash = crash  # type: ignore[attr-defined]

    class Pack:
        @hookimpl
        def nodegraph_register(self, registry: Any) -> None:
            registry.add_module(module)

    return build_registry([*entry_point_sources(), PackSource("servertest", "1.0.0", "tests", Pack)])


@pytest.fixture(scope="session")
def server_engine() -> Any:
    from nodegraph import Engine

    return Engine(crash_registry())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """One running server and small clients for it."""

    def __init__(self, folder: Path, engine: Any, **overrides: Any) -> None:
        import uvicorn

        from nodegraph.server.app import create_app
        from nodegraph.server.settings import ServeSettings

        self.folder = folder
        graphs = folder / "graphs"
        graphs.mkdir(parents=True)
        shutil.copy(ROOT / "graphs" / "txt2img.yaml", graphs / "txt2img.yaml")
        (graphs / "crash.yaml").write_text(CRASH_GRAPH)
        self.token = overrides.get("token")
        settings = ServeSettings(**{"host": "127.0.0.1", "port": free_port(), "out": folder / "out",
                                    "inputs": folder / "input", "graphs": graphs, "device": "cpu",
                                    "dtype": "float32", **overrides})
        from nodegraph.server.settings import check_settings

        check_settings(settings)
        self.settings = settings
        self.app, self.state = create_app(settings, engine)
        self.url = f"http://127.0.0.1:{settings.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=settings.port, log_level="warning",
                                lifespan="on", ws_max_size=16 * 2**20)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **kw: Any) -> Any:
        import requests

        return requests.get(self.url + path, headers=kw.pop("headers", self.headers()), timeout=60, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        import requests

        return requests.post(self.url + path, json=body, headers=kw.pop("headers", self.headers()),
                             timeout=60, **kw)

    def delete(self, path: str) -> Any:
        import requests

        return requests.delete(self.url + path, headers=self.headers(), timeout=60)

    def events(self, path: str = "/api/events") -> Any:
        from websockets.sync.client import connect

        ws_url = self.url.replace("http://", "ws://") + path
        if self.token:
            ws_url += ("&" if "?" in ws_url else "?") + f"token={self.token}"
        return connect(ws_url, open_timeout=30, max_size=16 * 2**20)

    def wait(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/api/jobs/{job_id}").json()
            if job["status"] in ("done", "failed", "cancelled"):
                return job  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def read_events(ws: Any, job_id: str, until: tuple[str, ...] = ("job_done", "job_failed", "job_cancelled"),
                timeout: float = 180) -> list[dict[str, Any]]:
    """The events of one job from a connected /api/events socket, up to its end."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message.get("job") != job_id:
            continue
        found.append(message)
        if message["type"] in until:
            return found
    raise AssertionError(f"no end event for job {job_id}: {found}")


@pytest.fixture(scope="module")
def make_server(tmp_path_factory: pytest.TempPathFactory,
                server_engine: Any) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def make(**overrides: Any) -> LiveServer:
        engine = overrides.pop("engine", server_engine)
        server = LiveServer(tmp_path_factory.mktemp("served"), engine, **overrides)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
