"""What a request cannot do: reach files outside the served folders, skip the token, send too much,
drive a loopback server from another site, load pickles; and a non-loopback bind needs a token."""

from __future__ import annotations

import http.client
import os
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import LiveServer

TOKEN = "s3cret-token-for-tests"
BAD_GRAPH = """version: 1
nodes:
  a: {type: core.text, value: hi}
  b: {type: core.join_textt, a: "@a"}
  c: {type: core.integer, value: nope}
"""


@pytest.fixture(scope="module")
def server(make_server: Any) -> LiveServer:
    return make_server()


@pytest.fixture(scope="module")
def guarded(make_server: Any) -> LiveServer:
    return make_server(token=TOKEN, max_body_mb=0.05)


def raw_get(server: LiveServer, path: str) -> int:
    """GET a path exactly as written (no client-side `..` normalisation)."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path, headers=server.headers())
    status = conn.getresponse().status
    conn.close()
    return status


def test_a_non_loopback_host_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--out", str(tmp_path / "o"),
                                      "--graphs", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a loopback address" in result.output and "--token" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()
    from nodegraph.errors import NodegraphError
    from nodegraph.server.settings import ServeSettings, check_settings

    for bad in ({"device": "gpu"}, {"dtype": "fp8"}, {"queue_size": 0}, {"graphs": tmp_path / "none"},
                {"host": "0.0.0.0", "token": "short"}):
        with pytest.raises(NodegraphError):
            check_settings(ServeSettings(**{"graphs": tmp_path, "out": tmp_path / "o",
                                            "inputs": tmp_path / "i", **bad}))

    check_settings(ServeSettings(host="localhost", graphs=tmp_path, out=tmp_path / "o",
                                 inputs=tmp_path / "i"))
    check_settings(ServeSettings(host="0.0.0.0", token=TOKEN, graphs=tmp_path, out=tmp_path / "o",
                                 inputs=tmp_path / "i"))


def test_a_bad_graph_is_refused_before_queueing_with_the_clis_records(server: LiveServer,
                                                                      tmp_path: Path) -> None:
    from nodegraph.errors import GraphError

    answer = server.post("/api/jobs", {"text": BAD_GRAPH, "name": "bad.yaml"})
    assert answer.status_code == 400
    records = answer.json()["errors"]
    (tmp_path / "bad.yaml").write_text(BAD_GRAPH)
    with pytest.raises(GraphError) as caught:
        server.state.engine.load(tmp_path / "bad.yaml")
    expected = [{"line": p.line, "node": p.node, "field": p.field, "message": p.message}
                for p in caught.value.problems]
    assert [{k: r[k] for k in ("line", "node", "field", "message")} for r in records] == expected
    assert {r["node"] for r in records} == {"b", "c"} and all(r["file"] == "bad.yaml" for r in records)
    assert server.get("/api/jobs").json() == []  # nothing was queued
    over = server.post("/api/jobs", {"graph": "txt2img.yaml", "set": {"steps": 0}})
    assert over.status_code == 400 and "steps" in over.text
    unknown = server.post("/api/jobs", {"graph": "txt2img.yaml", "set": {"seeds": 3}})
    assert unknown.status_code == 400 and "seeds" in unknown.text


@pytest.mark.parametrize("path", [
    "/view?filename=../../../etc/passwd&type=output",
    "/view?filename=/etc/passwd&type=output",
    "/view?filename=passwd&subfolder=../../../../etc&type=output",
    "/view?filename=passwd&subfolder=/etc&type=output",
    "/view?filename=x.png&type=temp",
    "/view?filename=..%2F..%2Fsecret.txt",
    "/outputs/../../secret.txt",
    "/outputs/%2e%2e/%2e%2e/secret.txt",
    "/outputs//etc/passwd",
    "/api/graphs/..%2Fsecret.txt",
    "/api/graphs/%2Fetc%2Fpasswd",
    "/api/graphs/../../secret.txt",
])
def test_no_path_in_a_request_reads_outside_the_served_folders(server: LiveServer, path: str) -> None:
    (server.folder / "secret.txt").write_text("secret")
    assert raw_get(server, path) in (400, 403, 404)


def test_symlinks_out_of_a_served_folder_are_not_followed(server: LiveServer, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not yours")
    out = server.settings.out
    out.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, out / "link.png")
    os.symlink(tmp_path, out / "linkdir")
    os.symlink(outside, server.settings.graphs / "linked.yaml")
    for path in ("/view?filename=link.png&type=output", "/view?filename=outside.png&subfolder=linkdir",
                 "/outputs/link.png", "/outputs/linkdir/outside.png", "/api/graphs/linked.yaml"):
        assert raw_get(server, path) in (400, 404), path
    (out / "real.png").write_bytes(b"png")
    assert server.get("/view?filename=real.png&type=output").content == b"png"


def test_a_graph_may_not_read_files_outside_the_served_folders(server: LiveServer) -> None:
    for path in ("/etc/hostname", "../secret.txt", "~/x.png"):
        text = f"version: 1\nnodes:\n  img: {{type: core.load_image, path: {path!r}}}\n"
        answer = server.post("/api/jobs", {"text": text, "name": "reader.yaml"})
        assert answer.status_code == 400, path
        [problem] = answer.json()["errors"]
        assert (problem["node"], problem["field"]) == ("img", "path")
        assert "served folders" in problem["message"]
    model = server.post("/api/jobs", {"graph": "txt2img.yaml", "set": {"model": "/etc/passwd"}})
    assert model.status_code == 400 and model.json()["errors"][0]["node"] == "model"


def test_uploads_stay_in_the_input_folder(server: LiveServer) -> None:
    import requests

    files = {"image": ("../../evil.png", b"\x89PNG fake", "image/png")}
    answer = requests.post(server.url + "/upload/image", files=files, data={"subfolder": "poses"}, timeout=30)
    assert answer.status_code == 200
    assert answer.json() == {"name": "evil.png", "subfolder": "poses", "type": "input"}
    assert (server.settings.inputs / "poses" / "evil.png").read_bytes() == b"\x89PNG fake"
    assert not (server.folder / "evil.png").exists() and not (server.folder.parent / "evil.png").exists()
    again = requests.post(server.url + "/upload/image", files={"image": ("evil.png", b"other", "image/png")},
                          data={"subfolder": "poses"}, timeout=30)
    assert again.json()["name"] == "evil (1).png"  # ComfyUI's renaming: never overwritten unless asked
    for data in ({"subfolder": "../.."}, {"subfolder": "/tmp"}, {"type": "output"}):
        bad = requests.post(server.url + "/upload/image", files={"image": ("x.png", b"x", "image/png")},
                            data=data, timeout=30)
        assert bad.status_code == 400, data


def test_pickled_checkpoints_are_refused(server: LiveServer) -> None:
    import pickle

    (server.settings.graphs / "tiny.ckpt").write_bytes(pickle.dumps({"state_dict": {}}))
    answer = server.post("/api/jobs", {"graph": "txt2img.yaml", "set": {"model": "tiny.ckpt", "steps": 2}})
    assert answer.status_code == 201
    job = server.wait(answer.json()["id"])
    assert job["status"] == "failed" and job["errors"][0]["node"] == "model"
    assert "pickle" in job["errors"][0]["message"].lower()


def test_a_page_elsewhere_cannot_drive_a_loopback_server(server: LiveServer) -> None:
    evil = server.post("/api/jobs", {"graph": "crash.yaml"}, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    same = server.get("/api/graphs", headers={"Origin": server.url})
    assert same.status_code == 200


def test_the_token_guards_http_and_websocket(guarded: LiveServer) -> None:
    import requests
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = guarded.url
    assert requests.get(url + "/api/graphs", timeout=30).status_code == 401
    assert requests.get(url + "/api/graphs", headers={"Authorization": "Bearer wrong-token-x"},
                        timeout=30).status_code == 401
    assert requests.post(url + "/prompt", json={"prompt": {}}, timeout=30).status_code == 401
    assert requests.get(url + "/view?filename=x.png", timeout=30).status_code == 401
    assert guarded.get("/api/graphs").status_code == 200
    # the page's own files are public (a browser cannot send the token with module imports)
    assert requests.get(url + "/", timeout=30).status_code in (200, 404)
    assert requests.get(url + "/static/../api/graphs", timeout=30).status_code == 401
    assert requests.get(url + "/static/%2e%2e/api/graphs", timeout=30).status_code in (401, 404)
    assert requests.get(url + f"/api/graphs?token={TOKEN}", timeout=30).status_code == 200
    for path in ("/api/events", "/ws?clientId=a"):
        with pytest.raises(InvalidStatus):
            connect(url.replace("http", "ws") + path, open_timeout=30)
    with guarded.events("/ws?clientId=a") as ws:
        assert '"status"' in ws.recv(timeout=30)


def test_request_bodies_over_the_limit_are_refused(guarded: LiveServer) -> None:
    import requests

    big = {"text": "x" * 60_000}
    assert guarded.post("/api/jobs", big).status_code == 413

    def chunks() -> Any:  # no Content-Length: counted while read
        for _ in range(20):
            yield b" " * 4096

    streamed = requests.post(guarded.url + "/api/jobs", data=chunks(), headers=guarded.headers(), timeout=30)
    assert streamed.status_code == 413
    assert guarded.post("/api/jobs", {"graph": "nope.yaml"}).status_code == 404
