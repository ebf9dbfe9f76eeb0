"""The native API around jobs: served graphs, inspect (for the page), sweeps, PNG re-runs, and what a
restart says about the jobs the previous server lost."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.server.conftest import ROOT, SMALL, LiveServer


@pytest.fixture(scope="module")
def server(make_server: Any) -> LiveServer:
    return make_server()


def test_graphs_are_listed_and_read_from_the_served_folder(server: LiveServer) -> None:
    rows = server.get("/api/graphs").json()
    assert [r["name"] for r in rows] == ["crash.yaml", "txt2img.yaml"]
    assert rows[1]["description"].startswith("Text to image: encode a prompt")
    answer = server.get("/api/graphs/txt2img.yaml").json()
    assert answer == {"name": "txt2img.yaml", "text": (ROOT / "graphs" / "txt2img.yaml").read_text()}
    assert server.get("/api/graphs/nope.yaml").status_code == 404


def test_inspect_describes_nodes_links_layers_and_params(server: LiveServer) -> None:
    text = (ROOT / "graphs" / "txt2img.yaml").read_text()
    info = server.post("/api/inspect", {"text": text, "name": "txt2img.yaml"}).json()
    assert info["format"] == "nodegraph" and info["text"] == text
    ids = [n["id"] for n in info["nodes"]]
    assert ids == ["model", "scheduler", "positive", "negative", "empty", "latents", "image", "save"]
    sample = next(n for n in info["nodes"] if n["id"] == "latents")
    assert sample["type"] == "diffusion.sample" and sample["doc"]
    assert {"name": "steps", "type": "int", "value": 20} in sample["inputs"]
    assert {"from": ["empty", "out"], "to": ["latents", "latents"], "type": "Latents"} in info["links"]
    assert info["layers"][0] == ["model", "empty"] and info["layers"][-1] == ["save"]
    assert sum(len(layer) for layer in info["layers"]) == 8
    steps = next(p for p in info["params"] if p["name"] == "steps")
    assert steps == {"name": "steps", "type": "int", "default": 20, "minimum": 1, "maximum": 1000,
                     "description": "Sampling steps"}
    bad = server.post("/api/inspect", {"text": "version: 1\nnodes:\n  a: {type: core.nope}\n"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["node"] == "a"


def test_inspect_reads_a_comfyui_workflow_and_a_nodegraph_png(server: LiveServer) -> None:
    flow = (ROOT / "tests" / "fixtures" / "comfyui" / "txt2img_default.json").read_text()
    info = server.post("/api/inspect", {"text": flow, "name": "flow.json"}).json()
    assert info["format"] == "comfyui" and "diffusion.sample" in info["text"]
    assert {n["type"] for n in info["nodes"]} >= {"diffusion.sample", "core.save_image"}
    submitted = server.post("/api/jobs", {"graph": "txt2img.yaml", "set": {**SMALL, "seed": 77}})
    job = server.wait(submitted.json()["id"])
    png = (server.settings.out / job["outputs"][0]["path"]).read_bytes()
    again = server.post("/api/inspect", {"png_base64": base64.b64encode(png).decode()}).json()
    assert again["format"] == "nodegraph"
    assert next(p for p in again["params"] if p["name"] == "seed")["default"] == 77
    rerun = server.post("/api/jobs", {"png_base64": base64.b64encode(png).decode()})
    assert rerun.status_code == 201
    done = server.wait(rerun.json()["id"])
    second_file = server.settings.out / done["outputs"][0]["path"]
    with Image.open(io.BytesIO(png)) as first, Image.open(second_file) as second:
        assert np.array_equal(np.asarray(first), np.asarray(second))  # the same pixels again
    assert server.post("/api/inspect", {"png_base64": "not base64!"}).status_code == 400


def test_a_sweep_queues_one_job_per_variant(server: LiveServer) -> None:
    answer = server.post("/api/jobs", {"graph": "txt2img.yaml", "set": SMALL, "sweep": {"seed": [1, 2, 3]}})
    assert answer.status_code == 201
    jobs = answer.json()["jobs"]
    assert len(jobs) == 3 and answer.json()["id"] == jobs[0]["id"]
    finished = [server.wait(j["id"]) for j in jobs]
    assert [j["set"]["seed"] for j in finished] == [1, 2, 3]
    assert len({(server.settings.out / j["outputs"][0]["path"]).read_bytes() for j in finished}) == 3
    bad = server.post("/api/jobs", {"graph": "txt2img.yaml", "sweep": {"seed": [1, -5]}})
    assert bad.status_code == 400 and server.get("/api/jobs/" + "x" * 32).status_code == 404


def test_a_restart_reports_the_jobs_the_previous_server_lost(server: LiveServer, make_server: Any) -> None:
    from nodegraph.server.state import STATE_FILE, ServerState

    lost = [{"id": "a" * 32, "graph": "txt2img.yaml", "submitted": "2026-01-01T00:00:00.000Z",
             "status": "queued"}]
    (server.settings.out / STATE_FILE).write_text(json.dumps(lost))
    state = ServerState(server.settings, server.state.engine)
    assert state.lost == lost
    [record] = state.lost_records()
    assert record["id"] == "a" * 32 and record["status"] == "failed"
    assert "lost" in record["errors"][0]["message"]
    # a clean run leaves nothing to report: the state file lists only unfinished jobs
    state._save_unfinished()
    assert json.loads((server.settings.out / STATE_FILE).read_text()) == []


def test_events_also_come_as_server_sent_events(server: LiveServer) -> None:
    import requests

    with requests.get(server.url + "/api/events/sse", stream=True, timeout=120) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        answer = server.post("/api/jobs", {"graph": "txt2img.yaml", "set": {**SMALL, "seed": 88}})
        job_id = answer.json()["id"]
        kinds = []
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event["job"] == job_id:
                    kinds.append(event["type"])
                    if event["type"] in ("job_done", "job_failed", "job_cancelled"):
                        break
    assert kinds[:2] == ["job_queued", "job_started"] and kinds[-1] == "job_done"
    assert kinds.count("step") == 2 and kinds.count("node_finished") + kinds.count("node_cached") == 8
