"""The job queue through the native API: events in order, the warm cache, cancel, 429, a burst."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.server.conftest import ROOT, SMALL, LiveServer, read_events

TERMINAL = ("job_done", "job_failed", "job_cancelled")


@pytest.fixture(scope="module")
def server(make_server: Any) -> LiveServer:
    return make_server(queue_size=3)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _submit(server: LiveServer, **sets: Any) -> str:
    answer = server.post("/api/jobs", {"graph": "txt2img.yaml", "set": {**SMALL, **sets}})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]  # type: ignore[no-any-return]


def test_a_job_runs_with_its_events_in_order_and_makes_the_librarys_image(server: LiveServer,
                                                                            tmp_path: Path) -> None:
    from nodegraph import Engine, RunOptions

    # the same graph and values in-process: the reference image and run order
    ours = Engine().run(ROOT / "graphs" / "txt2img.yaml", {**SMALL, "seed": 101},
                        options=RunOptions(out_dir=tmp_path, device="cpu", dtype="float32"))
    with server.events() as ws:
        job_id = _submit(server, seed=101)
        events = read_events(ws, job_id)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["job_queued", "job_started"] and kinds[-1] == "job_done"
    body = events[2:-1]
    # per node: node_started, then its steps, then node_finished (or node_cached), in run order
    nodes = [e["node"] for e in body if e["type"] == "node_started"]
    assert nodes == [e.node for e in ours.events] and len(nodes) == 8
    for i, event in enumerate(body):
        if event["type"] == "node_started":
            end = next(e for e in body[i + 1:] if e["type"] in ("node_finished", "node_cached"))
            assert end["node"] == event["node"]
    steps = [(e["node"], e["step"], e["total"]) for e in body if e["type"] == "step"]
    assert steps == [("latents", 1, 2), ("latents", 2, 2)]
    # each step carries a latent preview; the last one is the preview of the sampler's result
    from nodegraph_diffusion.preview import latent_preview

    previews = [e["preview"] for e in body if e["type"] == "step"]
    assert all(p.startswith("data:image/png;base64,") for p in previews) and previews[0] != previews[1]
    with Image.open(io.BytesIO(base64.b64decode(previews[-1].split(",", 1)[1]))) as last:
        assert last.size == (4, 4)  # 32 px / the VAE's 8
        assert np.array_equal(np.asarray(last), latent_preview(ours.outputs["latents"]["out"].samples))
    job = server.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "done" and set(job["nodes"].values()) <= {"done", "cached"}
    assert job["outputs"] == events[-1]["outputs"] == [
        {"node": "save", "url": f"/outputs/{job_id}/txt2img.png", "path": f"{job_id}/txt2img.png"}]
    assert "--set seed=101" in job["cli"] and "default: 101" in job["yaml"]
    served = server.get(job["outputs"][0]["url"])
    image = server.settings.out / job_id / "txt2img.png"
    assert served.status_code == 200 and served.content == image.read_bytes()
    assert np.array_equal(_pixels(image), _pixels(tmp_path / "txt2img.png"))


def test_a_seed_only_change_reruns_only_what_the_seed_touches(server: LiveServer) -> None:
    server.wait(_submit(server, seed=201, prompt="a small blue square on the left, red background"))
    with server.events() as ws:
        job_id = _submit(server, seed=202, prompt="a small blue square on the left, red background")
        events = read_events(ws, job_id)
    cached = [e["node"] for e in events if e["type"] == "node_cached"]
    ran = [e["node"] for e in events if e["type"] == "node_finished"]
    assert sorted(cached) == ["empty", "model", "negative", "positive", "scheduler"]
    assert ran == ["latents", "image", "save"]
    nodes = server.get(f"/api/jobs/{job_id}").json()["nodes"]
    assert nodes == {**dict.fromkeys(cached, "cached"), **dict.fromkeys(ran, "done")}


def test_cancel_mid_run_stops_between_steps_and_writes_nothing(server: LiveServer) -> None:
    with server.events() as ws:
        job_id = _submit(server, seed=301, steps=1000)
        seen = read_events(ws, job_id, until=("step",))
        assert seen[-1]["step"] == 1
        answer = server.delete(f"/api/jobs/{job_id}")
        assert answer.status_code == 200
        events = read_events(ws, job_id)
    assert events[-1]["type"] == "job_cancelled"
    last_step = max(e["step"] for e in seen + events if e["type"] == "step")
    assert last_step < 1000
    job = server.wait(job_id)
    assert job["status"] == "cancelled" and job["outputs"] == []
    folder = server.settings.out / job_id
    assert not folder.exists() or not any(folder.rglob("*"))
    assert server.delete(f"/api/jobs/{job_id}").status_code == 409  # finished: nothing to cancel
    # the server goes on serving
    assert server.wait(_submit(server, seed=302))["status"] == "done"


def test_a_full_queue_answers_429_and_queued_jobs_can_be_moved_and_cancelled(server: LiveServer) -> None:
    with server.events() as ws:
        running = _submit(server, seed=401, steps=1000)
        read_events(ws, running, until=("job_started",))
    queued = [_submit(server, seed=402 + i) for i in range(3)]
    full = server.post("/api/jobs", {"graph": "txt2img.yaml", "set": SMALL})
    assert full.status_code == 429
    assert full.json() == {"errors": [{"message": "queue full (3 jobs)"}]}
    moved = server.post(f"/api/jobs/{queued[2]}/move", {"position": 0})
    assert moved.status_code == 200 and moved.json()["position"] == 0
    order = [j["id"] for j in server.get("/api/jobs").json() if j["status"] == "queued"]
    assert order == [queued[2], queued[0], queued[1]]
    for job_id in [*queued, running]:
        assert server.delete(f"/api/jobs/{job_id}").status_code == 200
    for job_id in [*queued, running]:
        assert server.wait(job_id)["status"] == "cancelled"
    assert server.post(f"/api/jobs/{queued[0]}/move", {"position": 0}).status_code == 409


def test_a_crashing_node_fails_its_job_and_the_server_lives(server: LiveServer) -> None:
    answer = server.post("/api/jobs", {"graph": "crash.yaml"})
    assert answer.status_code == 201
    job = server.wait(answer.json()["id"])
    assert job["status"] == "failed" and job["nodes"] == {"boom": "failed"}
    assert job["errors"][0]["node"] == "boom" and "RuntimeError: node bug 3" in job["errors"][0]["message"]
    assert server.wait(_submit(server, seed=501))["status"] == "done"


def test_a_burst_of_20_jobs_from_several_clients_writes_every_image_exactly_once(server: LiveServer) -> None:
    server.state.queue.limit = 20  # this test's burst fits; the 429 test keeps its small queue
    ids: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(first: int) -> None:
        for seed in range(first, first + 5):
            answer = server.post("/api/jobs", {"graph": "txt2img.yaml", "set": {**SMALL, "seed": seed},
                                               "client": f"c{first}"})
            with lock:
                if answer.status_code == 201:
                    ids.append(answer.json()["id"])
                else:
                    failures.append(answer.text)

    threads = [threading.Thread(target=client, args=(1000 + 10 * i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == [] and len(set(ids)) == 20
        jobs = [server.wait(job_id) for job_id in ids]
    finally:
        server.state.queue.limit = 3
    assert all(job["status"] == "done" for job in jobs)
    paths = [out["path"] for job in jobs for out in job["outputs"]]
    assert len(paths) == 20 and len(set(paths)) == 20
    assert sorted(paths) == sorted(f"{job['id']}/txt2img.png" for job in jobs)
    written = sorted(p.relative_to(server.settings.out).as_posix()
                     for job in jobs for p in (server.settings.out / job["id"]).rglob("*") if p.is_file())
    assert written == sorted(paths)  # nothing else in the jobs' folders: no staging left behind
    images = {(server.settings.out / p).read_bytes() for p in paths}
    assert len(images) == 20  # 20 seeds, 20 different images: no job wrote over another's
