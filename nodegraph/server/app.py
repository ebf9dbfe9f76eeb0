"""Assemble the server: routes of both APIs, the page, the guards, and start/stop of the worker."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nodegraph.runtime.engine import Engine
from nodegraph.server import comfy, native
from nodegraph.server.guards import ASGIApp, Guards
from nodegraph.server.settings import ServeSettings
from nodegraph.server.state import ServerState

log = logging.getLogger("nodegraph.server")
STATIC = Path(__file__).parent / "static"


async def page(request: Request) -> Response:
    index = STATIC / "index.html"
    if not index.is_file():
        return JSONResponse({"errors": [{"message": "the page is not installed (nodegraph/server/static)"}]},
                            status_code=404)
    return FileResponse(index, headers={"Cache-Control": "no-cache"})


def create_app(settings: ServeSettings, engine: Engine | None = None) -> tuple[ASGIApp, ServerState]:
    """The ASGI app for `settings` (guards included) and its state; the worker starts with the app."""
    state = ServerState(settings, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import asyncio

        state.hub.bind(asyncio.get_running_loop())
        state.start()
        try:
            yield
        finally:
            left = state.stop()
            if left:
                log.warning("stopped with %d unfinished jobs (lost: jobs live in memory)", len(left))

    routes: list[Any] = [Route("/", page), *native.ROUTES, *comfy.routes()]
    if STATIC.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=native.error_handlers())
    app.state.server = state
    app.state.comfy = comfy.ComfyBridge(state)
    return Guards(app, settings.token, settings.max_body), state
