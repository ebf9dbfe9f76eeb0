"""ComfyUI's API: a ComfyUI client library from PyPI (comfy-api-simplified, unchanged) gets its image
back from `nodegraph serve`; the WebSocket speaks ComfyUI's messages in ComfyUI's order."""

from __future__ import annotations

import copy
import io
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.server.conftest import ROOT, LiveServer

FIXTURE = ROOT / "tests" / "fixtures" / "comfyui" / "txt2img_default.json"
TITLES = {"KSampler": "KSampler", "CheckpointLoaderSimple": "Load Checkpoint", "EmptyLatentImage":
          "Empty Latent Image", "CLIPTextEncode": "CLIP Text Encode (Prompt)", "VAEDecode": "VAE Decode",
          "SaveImage": "Save Image"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ComfyUI-style models folder holding the tiny model under the workflow's checkpoint name."""
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from nodegraph_diffusion.tiny import save_single_file

    root = tmp_path_factory.mktemp("comfy-models")
    save_single_file(BUILTIN_DIR / "tinyworld", root / "checkpoints" / "v1-5-pruned-emaonly.safetensors")
    return root


@pytest.fixture(scope="module")
def server(make_server: Any, models: Path) -> LiveServer:
    return make_server(models=(models,))


def workflow(seed: int = 8566257) -> dict[str, Any]:
    """The fixture as ComfyUI's "Save (API format)" writes it (with node titles), made small."""
    data = json.loads(FIXTURE.read_text())
    for body in data.values():
        body["_meta"] = {"title": TITLES[body["class_type"]]}
    data["6"]["_meta"]["title"], data["7"]["_meta"]["title"] = "Positive", "Negative"
    data["5"]["inputs"].update(width=64, height=64)
    data["3"]["inputs"].update(steps=2, seed=seed)
    return data


def reference_pixels(flow: dict[str, Any], models: Path, tmp_path: Path) -> np.ndarray:
    """The same workflow imported and run in-process (the `nodegraph run workflow.json` path)."""
    from nodegraph_comfyui import import_workflow

    from nodegraph import Engine, RunOptions

    file = tmp_path / "workflow.json"
    file.write_text(json.dumps(flow))
    result = Engine().run(import_workflow(file), options=RunOptions(
        out_dir=tmp_path / "out", device="cpu", dtype="float32", model_dirs=(models,)))
    [written] = result.written
    with Image.open(written) as image:
        return np.asarray(image.convert("RGB"))


def test_a_comfyui_client_library_gets_its_image_back(server: LiveServer, models: Path,
                                                      tmp_path: Path) -> None:
    from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

    api = ComfyApiWrapper(server.url)
    flow = ComfyWorkflowWrapper(copy.deepcopy(workflow()))
    flow.set_node_param("Positive", "text", "a big red circle in the center, blue background")
    images = api.queue_and_wait_images(flow, "Save Image")
    [(name, data)] = images.items()
    assert name.endswith(".png")
    with Image.open(io.BytesIO(data)) as image:
        got = np.asarray(image.convert("RGB"))
    assert np.array_equal(got, reference_pixels(dict(flow), models, tmp_path))
    queue = api.get_queue()
    assert queue == {"queue_running": [], "queue_pending": []}
    info = api.get_object_info("diffusion.sample")
    assert info["diffusion.sample"]["output_name"] == ["out"]
    inputs = info["diffusion.sample"]["input"]
    widgets = {**inputs["required"], **inputs["optional"]}
    assert widgets["steps"][0] == "INT" and widgets["steps"][1]["min"] >= 1
    assert widgets["cfg"][0] == "FLOAT" and widgets["unet"][0].isupper()  # a port: its type's name


def test_the_websocket_speaks_comfyuis_messages_in_order(server: LiveServer) -> None:
    from websockets.sync.client import connect

    client = uuid.uuid4().hex
    with connect(server.url.replace("http", "ws") + f"/ws?clientId={client}", open_timeout=30) as ws:
        hello = json.loads(ws.recv(timeout=30))
        assert hello["type"] == "status" and hello["data"]["sid"] == client
        assert "queue_remaining" in hello["data"]["status"]["exec_info"]
        answer = server.post("/prompt", {"prompt": workflow(seed=5), "client_id": client})
        assert answer.status_code == 200
        prompt_id = answer.json()["prompt_id"]
        assert set(answer.json()) == {"prompt_id", "number", "node_errors"}
        messages = []
        while True:
            message = json.loads(ws.recv(timeout=120))
            messages.append(message)
            if message["type"] == "executing" and message["data"]["node"] is None:
                break
    mine = [m for m in messages if m["type"] != "status"]
    assert all(m["data"]["prompt_id"] == prompt_id for m in mine)
    kinds = [m["type"] for m in mine]
    assert kinds[0] == "execution_start" and kinds[-2:] == ["execution_success", "executing"]
    executing = [m["data"]["node"] for m in mine if m["type"] == "executing"][:-1]
    assert executing[-1] == "9" and "3" in executing  # the workflow's own ids: KSampler, SaveImage
    progress = [(m["data"]["value"], m["data"]["max"], m["data"]["node"])
                for m in mine if m["type"] == "progress"]
    assert progress == [(1, 2, "3"), (2, 2, "3")]
    [executed] = [m["data"] for m in mine if m["type"] == "executed"]
    assert executed["node"] == "9"
    [image] = executed["output"]["images"]
    assert image["type"] == "output" and image["subfolder"] == prompt_id
    # a second run: the checkpoint and prompts come from the cache, ComfyUI's execution_cached says so
    history = server.get(f"/history/{prompt_id}").json()[prompt_id]
    assert history["status"] == {"status_str": "success", "completed": True,
                                 "messages": history["status"]["messages"]}
    assert [m[0] for m in history["status"]["messages"]][0] == "execution_start"
    assert history["outputs"] == {"9": {"images": [image]}}
    assert history["prompt"][1] == prompt_id and history["prompt"][2]["9"]["class_type"] == "SaveImage"
    view = server.get(f"/view?filename={image['filename']}&subfolder={image['subfolder']}&type=output")
    assert view.status_code == 200 and view.content[:4] == b"\x89PNG"
    again = server.post("/prompt", {"prompt": workflow(seed=6), "client_id": client}).json()["prompt_id"]
    server.wait(again)
    cached = [n for m in server.get(f"/history/{again}").json()[again]["status"]["messages"]
              if m[0] == "execution_cached" for n in m[1]["nodes"]]
    assert {"4", "6", "7", "5"} <= set(cached) and "9" not in cached


def test_a_workflow_nodegraph_cannot_convert_is_a_400_naming_the_class(server: LiveServer) -> None:
    flow = workflow()
    flow["10"] = {"class_type": "SomeCustomNode", "inputs": {"images": ["8", 0]}}
    answer = server.post("/prompt", {"prompt": flow})
    assert answer.status_code == 400
    assert "SomeCustomNode" in answer.json()["error"]["message"]
    assert server.post("/prompt", {"nope": 1}).status_code == 400


def test_interrupt_stops_the_running_prompt(server: LiveServer) -> None:
    flow = workflow(seed=7)
    flow["3"]["inputs"]["steps"] = 1000
    prompt_id = server.post("/prompt", {"prompt": flow}).json()["prompt_id"]
    import time

    deadline = time.monotonic() + 60
    while server.get(f"/api/jobs/{prompt_id}").json()["step"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert server.post("/interrupt").status_code == 200
    job = server.wait(prompt_id)
    assert job["status"] == "cancelled" and job["outputs"] == []
    entry = server.get(f"/history/{prompt_id}").json()[prompt_id]
    assert entry["status"]["completed"] is False
    assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"


def test_queue_front_and_clear(server: LiveServer) -> None:
    import time

    long = workflow(seed=8)
    long["3"]["inputs"]["steps"] = 1000
    running = server.post("/prompt", {"prompt": long}).json()["prompt_id"]
    deadline = time.monotonic() + 60
    while server.get(f"/api/jobs/{running}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first = server.post("/prompt", {"prompt": workflow(seed=9)}).json()["prompt_id"]
    second = server.post("/prompt", {"prompt": workflow(seed=10), "front": True}).json()["prompt_id"]
    queue = server.get("/queue").json()
    assert [row[1] for row in queue["queue_running"]] == [running]
    assert [row[1] for row in queue["queue_pending"]] == [second, first]
    assert server.get("/prompt").json() == {"exec_info": {"queue_remaining": 3}}
    assert server.post("/queue", {"clear": True}).status_code == 200
    assert server.get("/queue").json()["queue_pending"] == []
    server.post("/interrupt", {"prompt_id": running})
    assert [server.wait(i)["status"] for i in (running, first, second)] == ["cancelled"] * 3
