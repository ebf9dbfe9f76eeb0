"""ComfyUI's API beside the native one, so clients written for ComfyUI work unchanged.

`POST /prompt` takes an API-format workflow, converts it through the `comfyui` importer (the server
knows no pack) and queues it like any job. Progress goes to the submitting client's `/ws?clientId=`
in ComfyUI's messages, under the workflow's own node ids (the importer's `metadata.source_ids`);
`/history` and `/view` give the images back. Shapes follow ComfyUI's server.py and execution.py.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from nodegraph.errors import NodegraphError
from nodegraph.server.events import Event, Subscribers
from nodegraph.server.jobs import CANCELLED, DONE, FAILED, Job, JobStateError, QueueFull
from nodegraph.server.native import json_body, relay, state_of
from nodegraph.server.object_info import object_info
from nodegraph.server.paths import OutsideFolder, clean_relative, inside
from nodegraph.server.sources import records_of
from nodegraph.server.state import ServerState

HISTORY_MESSAGES = ("execution_start", "execution_cached", "execution_success", "execution_error",
                    "execution_interrupted")


def _ms() -> int:
    return int(time.time() * 1000)


class ComfyBridge:
    """Native job events -> ComfyUI WebSocket messages, and the per-job message log `/history` shows."""

    def __init__(self, server: ServerState) -> None:
        self.server = server
        self.clients = Subscribers()
        self.messages: dict[str, list[list[Any]]] = {}
        self.number = 0
        self._last_node: dict[str, str | None] = {}
        server.hub.listen(self.on_event)

    def queue_remaining(self) -> int:
        running, pending = self.server.queue.counts()
        return len(pending) + (1 if running is not None else 0)

    def status(self) -> dict[str, Any]:
        return {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}

    def next_number(self) -> int:
        self.number += 1
        return self.number - 1

    # -- events -----------------------------------------------------------------------------------
    def _job(self, job_id: str) -> Job | None:
        found = self.server.queue.get(job_id)
        return found[0] if found else None

    def _send(self, job: Job, kind: str, data: dict[str, Any]) -> None:
        data = {**data, "prompt_id": job.id}
        if kind in HISTORY_MESSAGES:
            data.setdefault("timestamp", _ms())
            self.messages.setdefault(job.id, []).append([kind, data])
        client = (job.comfy or {}).get("client_id")
        if client:
            self.clients.send({"type": kind, "data": data}, client)

    def source_id(self, job: Job, node: str | None) -> str | None:
        if node is None:
            return None
        ids = (job.comfy or {}).get("ids") or {}
        return str(ids.get(node, node))

    def on_event(self, event: Event) -> None:
        kind = event["type"]
        if kind in ("job_queued", "job_started", "job_done", "job_failed", "job_cancelled"):
            self.clients.send({"type": "status", "data": self.status()})
        job = self._job(event["job"])
        if job is None or job.comfy is None:
            return
        if kind == "job_started":
            self._send(job, "execution_start", {})
        elif kind == "node_started":
            node = self.source_id(job, event["node"])
            if self._last_node.get(job.id) != node:
                self._last_node[job.id] = node
                self._send(job, "executing", {"node": node, "display_node": node})
        elif kind == "node_cached":
            self._send(job, "execution_cached", {"nodes": [self.source_id(job, event["node"])]})
        elif kind == "step":
            node = self.source_id(job, event["node"])
            self._send(job, "progress", {"value": event["step"], "max": event["total"], "node": node})
        elif kind == "job_done":
            for node, images in self.outputs(job).items():
                self._send(job, "executed", {"node": node, "display_node": node,
                                             "output": {"images": images}})
            self._send(job, "execution_success", {})
            self._finish(job)
        elif kind == "job_failed":
            errors = event.get("errors") or []
            first = errors[0] if errors else {}
            node = self.source_id(job, first.get("node"))
            self._send(job, "execution_error", {
                "node_id": node, "node_type": self._class_of(job, node), "executed": self._executed(job),
                "exception_message": "\n".join(str(e.get("message")) for e in errors),
                "exception_type": "nodegraph.NodegraphError", "traceback": [], "current_inputs": {},
                "current_outputs": {}})
            self._finish(job)
        elif kind == "job_cancelled":
            node = self._last_node.get(job.id)
            self._send(job, "execution_interrupted", {"node_id": node, "node_type": self._class_of(job, node),
                                                      "executed": self._executed(job)})
            self._finish(job)

    def _finish(self, job: Job) -> None:
        self._last_node.pop(job.id, None)
        self._send(job, "executing", {"node": None, "display_node": None})
        if len(self.messages) > self.server.settings.history:  # forget the logs of forgotten jobs
            known = {j.id for j, _ in self.server.queue.snapshot()}
            self.messages = {k: v for k, v in self.messages.items() if k in known}

    def _class_of(self, job: Job, node: str | None) -> str | None:
        prompt = (job.comfy or {}).get("prompt") or {}
        body = prompt.get(node) if node is not None else None
        return body.get("class_type") if isinstance(body, dict) else None

    def _executed(self, job: Job) -> list[str]:
        done = {self.source_id(job, n) for n, s in job.nodes.items() if s in ("done", "cached")}
        return sorted(n for n in done if n is not None)

    def outputs(self, job: Job) -> dict[str, list[dict[str, str]]]:
        """Images by workflow node id, as ComfyUI's history and `executed` messages list them."""
        found: dict[str, list[dict[str, str]]] = {}
        for out in job.outputs:
            rel = Path(str(out["path"]))
            node = self.source_id(job, out.get("node")) or "output"
            found.setdefault(node, []).append(
                {"filename": rel.name, "subfolder": rel.parent.as_posix(), "type": "output"})
        return found

    def history_entry(self, job: Job) -> dict[str, Any]:
        comfy = job.comfy or {}
        prompt = [comfy.get("number", 0), job.id, comfy.get("prompt", {}), comfy.get("extra_data", {}),
                  comfy.get("outputs", [])]
        status = {DONE: "success", FAILED: "error", CANCELLED: "error"}.get(job.status, job.status)
        outputs = {node: {"images": images} for node, images in self.outputs(job).items()}
        return {"prompt": prompt, "outputs": outputs,
                "status": {"status_str": status, "completed": job.status == DONE,
                           "messages": self.messages.get(job.id, [])},
                "meta": {n: {"node_id": n, "display_node": n} for n in self.outputs(job)}}

    def queue_row(self, job: Job) -> list[Any]:
        comfy = job.comfy or {}
        return [comfy.get("number", 0), job.id, comfy.get("prompt", {}), comfy.get("extra_data", {}),
                comfy.get("outputs", [])]


def bridge_of(request: Request | WebSocket) -> ComfyBridge:
    return request.app.state.comfy  # type: ignore[no-any-return]


def _comfy_error(message: str, records: list[dict[str, Any]], status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"type": "invalid_prompt", "message": message, "details": message,
                                   "extra_info": {}}, "node_errors": {}, "errors": records},
                        status_code=status)


async def post_prompt(request: Request) -> Response:
    server, bridge = state_of(request), bridge_of(request)
    body = await json_body(request)
    workflow = body.get("prompt")
    if workflow is None:
        return _comfy_error("no prompt", [{"message": "no prompt"}])
    client = body.get("client_id")
    given = body.get("extra_data")
    extra: dict[str, Any] = given if isinstance(given, dict) else {}

    def work() -> Job:
        loaded = server.sources.from_workflow(workflow)
        plan = server.sources.plan(loaded)
        metadata = loaded.document.get("metadata", {}) if loaded.document else {}
        ids = metadata.get("source_ids", {}) if isinstance(metadata, dict) else {}
        outputs = sorted({str(i) for n, i in ids.items()
                          if n in plan.nodes and plan.nodes[n].spec.side_effects})
        comfy = {"prompt": workflow, "client_id": client if isinstance(client, str) else None,
                 "extra_data": {**extra, **({"client_id": client} if client else {})},
                 "ids": ids, "outputs": outputs}
        return server.make_job(loaded, plan, {}, comfy["client_id"], comfy)

    try:
        job = await run_in_threadpool(work)
    except NodegraphError as exc:
        records = records_of(exc)
        return _comfy_error("; ".join(str(r["message"]) for r in records), records)
    job.comfy["number"] = bridge.next_number()  # type: ignore[index]
    try:
        server.submit([job])
    except QueueFull as exc:
        return _comfy_error(str(exc), [{"message": str(exc)}], 429)
    if body.get("front"):  # ComfyUI's "queue front": run it next
        with contextlib.suppress(JobStateError, KeyError):  # already taken by the worker: nothing to do
            server.queue.move(job.id, 0)
    return JSONResponse({"prompt_id": job.id, "number": job.comfy["number"], "node_errors": {}})  # type: ignore[index]


async def get_prompt(request: Request) -> Response:
    return JSONResponse(bridge_of(request).status()["status"])


async def get_queue(request: Request) -> Response:
    bridge = bridge_of(request)
    running, pending = state_of(request).queue.counts()
    return JSONResponse({"queue_running": [bridge.queue_row(running)] if running else [],
                         "queue_pending": [bridge.queue_row(j) for j in pending]})


async def post_queue(request: Request) -> Response:
    server = state_of(request)
    body = await json_body(request)
    if body.get("clear"):
        for job in server.queue.clear():
            server.hub.publish({"type": "job_cancelled", "job": job.id})
    for job_id in body.get("delete") or []:
        found = server.queue.get(str(job_id))
        if found is not None and found[1] is not None:
            server.queue.cancel(str(job_id))
            server.hub.publish({"type": "job_cancelled", "job": str(job_id)})
    return Response(status_code=200)


async def get_history(request: Request) -> Response:
    server, bridge = state_of(request), bridge_of(request)
    prompt_id = request.path_params.get("prompt_id")
    finished = server.queue.finished()
    if prompt_id is not None:
        finished = [j for j in finished if j.id == prompt_id]
    max_items = request.query_params.get("max_items")
    if max_items is not None and max_items.isdigit():
        finished = finished[-int(max_items):] if int(max_items) else []
    return JSONResponse({job.id: bridge.history_entry(job) for job in finished})


async def post_history(request: Request) -> Response:
    await json_body(request)  # finished jobs are forgotten past the history bound; nothing to clear by hand
    return Response(status_code=200)


def _folder(server: ServerState, kind: str) -> Path | None:
    return {"output": server.settings.out, "input": server.settings.inputs}.get(kind)


async def view(request: Request) -> Response:
    server = state_of(request)
    query = request.query_params
    filename = query.get("filename")
    folder = _folder(server, query.get("type", "output"))
    if not filename or folder is None:
        return Response(status_code=400)
    try:
        clean_relative(filename)
        if "/" in filename.replace("\\", "/"):
            raise OutsideFolder(filename)
        name = filename
        sub = query.get("subfolder", "")
        path = inside(folder, f"{sub}/{name}" if sub else name)
    except OutsideFolder:
        return Response(status_code=400)
    if not path.is_file() or path.name.startswith("."):
        return Response(status_code=404)
    return FileResponse(path, headers={"Content-Disposition": f'filename="{path.name}"'})


async def upload_image(request: Request) -> Response:
    server = state_of(request)
    form = await request.form()
    image = form.get("image")
    if image is None or isinstance(image, str) or not image.filename:
        return Response(status_code=400)
    kind = str(form.get("type") or "input")
    if kind != "input":
        return JSONResponse({"error": "uploads go to the input folder only (type=input)"}, status_code=400)
    subfolder = str(form.get("subfolder") or "")
    name = Path(str(image.filename).replace("\\", "/")).name
    try:
        clean_relative(name)
        folder = inside(server.settings.inputs, subfolder) if subfolder else server.settings.inputs.resolve()
        target = inside(server.settings.inputs, f"{subfolder}/{name}" if subfolder else name)
    except OutsideFolder:
        return Response(status_code=400)
    data = await image.read()
    overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")

    def save() -> str:
        folder.mkdir(parents=True, exist_ok=True)
        path, stem, suffix, i = target, Path(name).stem, Path(name).suffix, 1
        while path.exists() and not overwrite:
            if path.read_bytes() == data:
                return path.name  # the same file uploaded again: keep one copy, as ComfyUI does
            path = folder / f"{stem} ({i}){suffix}"
            i += 1
        if path.is_symlink():
            raise OutsideFolder(str(path))
        path.write_bytes(data)
        return path.name

    try:
        saved = await run_in_threadpool(save)
    except OutsideFolder:
        return Response(status_code=400)
    return JSONResponse({"name": saved, "subfolder": subfolder, "type": "input"})


async def get_object_info(request: Request) -> Response:
    registry = state_of(request).registry
    return JSONResponse(object_info(registry, request.path_params.get("node_class")))


async def interrupt(request: Request) -> Response:
    """Stop the running job (ComfyUI's newer clients may name it: `{"prompt_id": ...}`)."""
    server = state_of(request)
    raw = await request.body()
    wanted = None
    if raw:
        try:
            import json

            wanted = (json.loads(raw) or {}).get("prompt_id")
        except (ValueError, AttributeError):
            wanted = None
    running, _ = server.queue.counts()
    if running is not None and (wanted is None or wanted == running.id):
        server.queue.cancel(running.id)
    return Response(status_code=200)


async def system_stats(request: Request) -> Response:
    import platform
    import sys

    from nodegraph.cli.version import version_lines

    return JSONResponse({"system": {"os": platform.system(), "python_version": sys.version,
                                    "nodegraph": version_lines()[0], "comfyui_version": "nodegraph"},
                         "devices": []})


async def websocket(ws: WebSocket) -> None:
    """ComfyUI's `/ws?clientId=`: `status` first, then this client's jobs' messages."""
    bridge = bridge_of(ws)
    await ws.accept()
    sid = ws.query_params.get("clientId") or uuid.uuid4().hex
    queue = bridge.clients.add(sid)
    try:
        await ws.send_json({"type": "status", "data": {**bridge.status(), "sid": sid}})
        await relay(ws, queue)
    except (WebSocketDisconnect, RuntimeError):
        pass  # gone before the status message
    finally:
        bridge.clients.remove(sid, queue)


def routes() -> list[Any]:
    """ComfyUI's routes, each also under `/api` as ComfyUI serves them."""
    table = [
        ("/prompt", post_prompt, ["POST"]), ("/prompt", get_prompt, ["GET"]),
        ("/queue", get_queue, ["GET"]), ("/queue", post_queue, ["POST"]),
        ("/history", get_history, ["GET"]), ("/history", post_history, ["POST"]),
        ("/history/{prompt_id}", get_history, ["GET"]), ("/view", view, ["GET"]),
        ("/upload/image", upload_image, ["POST"]), ("/object_info", get_object_info, ["GET"]),
        ("/object_info/{node_class}", get_object_info, ["GET"]), ("/interrupt", interrupt, ["POST"]),
        ("/system_stats", system_stats, ["GET"]),
    ]
    out: list[Any] = []
    for prefix in ("", "/api"):
        out += [Route(prefix + path, fn, methods=methods) for path, fn, methods in table]
        out.append(WebSocketRoute(prefix + "/ws", websocket))
    return out
