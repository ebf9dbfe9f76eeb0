"""The native API (docs/server_api.md): graphs, inspect, jobs, outputs, and `WS /api/events`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from nodegraph.errors import NodegraphError
from nodegraph.server.describe import describe
from nodegraph.server.jobs import JobStateError, QueueFull
from nodegraph.server.paths import OutsideFolder, inside
from nodegraph.server.sources import GRAPH_SUFFIXES, RequestError, bad, override_texts, records_of
from nodegraph.server.state import ServerState


def errors(records: list[dict[str, Any]], status: int) -> JSONResponse:
    return JSONResponse({"errors": records}, status_code=status)


def state_of(request: Request | WebSocket) -> ServerState:
    return request.app.state.server  # type: ignore[no-any-return]


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 `RequestError`."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise bad(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    return body


def _description(path: Path) -> str:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return ""
    text = data.get("description") if isinstance(data, dict) else None
    return " ".join(str(text).split()) if text else ""


async def list_graphs(request: Request) -> Response:
    folder = state_of(request).settings.graphs

    def scan() -> list[dict[str, str]]:
        return [{"name": p.name, "description": _description(p)} for p in sorted(folder.iterdir())
                if p.is_file() and p.suffix.lower() in GRAPH_SUFFIXES and not p.name.startswith(".")]

    return JSONResponse(await run_in_threadpool(scan))


async def get_graph(request: Request) -> Response:
    loaded = state_of(request).sources.served(request.path_params["name"])
    assert loaded.path is not None
    text = await run_in_threadpool(loaded.path.read_text, encoding="utf-8")
    return JSONResponse({"name": loaded.name, "text": text})


async def inspect_graph(request: Request) -> Response:
    server = state_of(request)
    body = await json_body(request)

    def work() -> dict[str, Any]:
        from nodegraph.cli.import_cmd import to_yaml

        loaded = server.sources.from_body(body)
        plan = server.sources.plan(loaded, override_texts(body.get("set")))
        if loaded.text is not None and loaded.format == "nodegraph":
            text = loaded.text
        elif loaded.path is not None and loaded.format == "nodegraph":
            text = loaded.path.read_text(encoding="utf-8")
        else:
            text = to_yaml(dict(loaded.document or plan.resolved))
        return describe(plan, loaded.format, text)

    return JSONResponse(await run_in_threadpool(work))


def _sweep_rows(sweep: Any) -> list[dict[str, Any]]:
    """A request's `sweep` ({target: [values]}) as the overrides of each variant (grid)."""
    from nodegraph.sweep.spec import Axis
    from nodegraph.sweep.variants import combinations

    if sweep is None:
        return [{}]
    if not isinstance(sweep, dict) or not sweep:
        raise bad("'sweep' must be an object of name: [values]", "sweep")
    axes = []
    for target, values in sweep.items():
        if not isinstance(values, list) or not values or any(isinstance(v, (dict, list)) for v in values):
            raise bad(f"'sweep.{target}' must be a non-empty list of values", "sweep")
        axes.append(Axis(str(target), tuple(values)))
    return combinations(axes, zipped=False)


async def submit_job(request: Request) -> Response:
    server = state_of(request)
    body = await json_body(request)
    client = body.get("client")
    if client is not None and not isinstance(client, str):
        raise bad("'client' must be a string", "client")

    def work() -> list[Any]:
        loaded = server.sources.from_body(body)
        base = override_texts(body.get("set"))
        jobs = []
        for variant in _sweep_rows(body.get("sweep")):
            overrides = {**base, **variant}
            plan = server.sources.plan(loaded, overrides)
            jobs.append(server.make_job(loaded, plan, overrides, client))
        return jobs

    jobs = await run_in_threadpool(work)
    positions = server.submit(jobs)
    answer: dict[str, Any] = {"id": jobs[0].id, "status": "queued", "position": positions[0]}
    if len(jobs) > 1:
        answer["jobs"] = [{"id": j.id, "position": p} for j, p in zip(jobs, positions, strict=True)]
    return JSONResponse(answer, status_code=201)


async def list_jobs(request: Request) -> Response:
    server = state_of(request)
    rows = [job.as_json(position) for job, position in server.queue.snapshot()]
    return JSONResponse(rows + server.lost_records())


def _job_or_404(server: ServerState, job_id: str) -> Any:
    found = server.queue.get(job_id)
    if found is None:
        raise RequestError([{"file": None, "line": None, "node": None, "field": None,
                             "message": f"no job '{job_id}'"}], 404)
    return found


async def get_job(request: Request) -> Response:
    job, position = _job_or_404(state_of(request), request.path_params["id"])
    return JSONResponse(job.as_json(position))


async def cancel_job(request: Request) -> Response:
    server = state_of(request)
    job_id = request.path_params["id"]
    _job_or_404(server, job_id)
    job = server.queue.cancel(job_id)
    if job.status == "cancelled":  # it was queued: dropped now (a running one says so when it stops)
        server.hub.publish({"type": "job_cancelled", "job": job.id})
    return JSONResponse(job.as_json(None))


async def move_job(request: Request) -> Response:
    server = state_of(request)
    body = await json_body(request)
    position = body.get("position")
    if not isinstance(position, int) or isinstance(position, bool):
        raise bad("'position' must be an integer (0 = next to run)", "position")
    job_id = request.path_params["id"]
    _job_or_404(server, job_id)
    where = server.queue.move(job_id, position)
    job, _ = _job_or_404(server, job_id)
    return JSONResponse(job.as_json(where))


async def get_output(request: Request) -> Response:
    server = state_of(request)
    try:
        path = inside(server.settings.out, request.path_params["path"])
    except OutsideFolder:
        return errors([{"file": None, "line": None, "node": None, "field": None,
                        "message": "not a file of the output folder"}], 404)
    if not path.is_file() or path.name.startswith("."):
        return errors([{"file": None, "line": None, "node": None, "field": None,
                        "message": "no such output"}], 404)
    return FileResponse(path)


async def relay(websocket: WebSocket, queue: Any) -> None:
    """Send `queue`'s messages to an accepted socket until the client leaves; None from the queue
    closes it (1013: the server is going away). Reads from the client only to notice it left."""
    import asyncio

    receiver = asyncio.ensure_future(websocket.receive_text())
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                getter.cancel()
                receiver.result()  # raises WebSocketDisconnect when the client left
                receiver = asyncio.ensure_future(websocket.receive_text())
                continue
            message = getter.result()
            if message is None:
                await websocket.close(code=1013)
                return
            await websocket.send_json(message)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        receiver.cancel()


async def events(websocket: WebSocket) -> None:
    """Every native event to this client, in order, until it disconnects."""
    import uuid

    server = state_of(websocket)
    await websocket.accept()
    name = uuid.uuid4().hex
    queue = server.native.add(name)
    try:
        await relay(websocket, queue)
    finally:
        server.native.remove(name, queue)


async def events_sse(request: Request) -> Response:
    """The same events as Server-Sent Events (`GET /api/events/sse`), for clients without WebSockets."""
    import asyncio
    import uuid

    from starlette.responses import StreamingResponse

    server = state_of(request)
    name = uuid.uuid4().hex
    queue = server.native.add(name)

    async def stream() -> Any:
        try:
            yield ": nodegraph events\n\n"
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if message is None:
                    return
                yield f"event: {message['type']}\ndata: {json.dumps(message)}\n\n"
        finally:
            server.native.remove(name, queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def error_handlers() -> dict[Any, Any]:
    """User-facing errors as `{"errors": [records]}` with their status code."""

    async def on_request_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        return errors(exc.records, exc.status)

    async def on_user_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NodegraphError)
        return errors(records_of(exc), 400)

    async def on_queue_full(request: Request, exc: Exception) -> Response:
        return errors([{"message": str(exc)}], 429)

    async def on_state(request: Request, exc: Exception) -> Response:
        return errors([{"message": str(exc)}], 409)

    return {RequestError: on_request_error, NodegraphError: on_user_error, QueueFull: on_queue_full,
            JobStateError: on_state}


ROUTES = [
    Route("/api/graphs", list_graphs),
    Route("/api/graphs/{name:path}", get_graph),
    Route("/api/inspect", inspect_graph, methods=["POST"]),
    Route("/api/jobs", submit_job, methods=["POST"]),
    Route("/api/jobs", list_jobs, methods=["GET"]),
    Route("/api/jobs/{id}", get_job, methods=["GET"]),
    Route("/api/jobs/{id}", cancel_job, methods=["DELETE"]),
    Route("/api/jobs/{id}/move", move_job, methods=["POST"]),
    Route("/outputs/{path:path}", get_output),
    WebSocketRoute("/api/events", events),
    Route("/api/events/sse", events_sse),
]
