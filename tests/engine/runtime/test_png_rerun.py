"""`nodegraph run image.png` re-runs graphs that read input files, from any folder, to the same pixels.

Each PNG lists the files its run read (absolute path at save time, the param or field they came
from, content fingerprint, and the bytes when small); a re-run takes a file with that fingerprint
where it was, next to the PNG or in the current folder, else the embedded copy, else stops with an
error naming the file, its fingerprint, where it looked and the `--set` that supplies it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from nodegraph import Engine
from nodegraph.cli.app import app
from nodegraph.errors import GraphError
from nodegraph.runtime.png_inputs import EMBED_LIMIT
from tests.run_helpers import cpu_options as options
from tests.run_helpers import png_pixels as pixels

GRAPHS = Path(__file__).resolve().parents[3] / "graphs"
FAST = {"steps": 2}



def metadata(path: Path) -> dict:
    with PILImage.open(path) as im:
        return json.loads(im.text["nodegraph"])


def rerun(png: Path, out: Path):
    """Load the PNG's graph (its inputs located) and run it; the plan, to see which files it took."""
    engine = Engine()
    plan = engine.load(png)
    engine.run(plan, options=options(out))
    return plan


def copy_graph(name: str, folder: Path, files: list[str]) -> Path:
    """The shipped graph and the input files it names, copied into `folder` (which the test may empty)."""
    folder.mkdir(parents=True)
    shutil.copy(GRAPHS / f"{name}.yaml", folder)
    for rel in files:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(GRAPHS / rel, folder / rel)
    return folder / f"{name}.yaml"


@pytest.mark.parametrize(("graph", "saved", "param"), [("img2img", "img2img.png", "image"),
                                                      ("controlnet_pose", "controlnet_pose.png", "pose")])
def test_rerun_from_another_folder_gives_the_same_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          graph: str, saved: str, param: str) -> None:
    Engine().run(GRAPHS / f"{graph}.yaml", FAST, options(tmp_path / "out"))
    record = next(r for r in metadata(tmp_path / "out" / saved)["inputs"] if r.get("param") == param)
    assert Path(record["path"]).is_absolute() and Path(record["path"]).is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = rerun(Path("..") / "out" / saved, tmp_path / "again")
    assert Path(again.params[param]) == Path(record["path"])
    assert np.array_equal(pixels(tmp_path / "again" / saved), pixels(tmp_path / "out" / saved))


def test_moved_inputs_are_found_next_to_the_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs over the embedding limit: found by fingerprint next to the PNG once they moved there."""
    pose = json.loads((GRAPHS / "poses" / "standing_512x512.json").read_text())
    big = json.dumps(pose, indent=1) + " " * (EMBED_LIMIT + 10)  # valid JSON, too large to embed
    work = copy_graph("controlnet_pose", tmp_path / "work", [])
    (work.parent / "big_pose.json").write_text(big)
    Engine().run(work, {**FAST, "pose": "big_pose.json"}, options(tmp_path / "out"))
    saved = metadata(tmp_path / "out" / "controlnet_pose.png")
    record = next(r for r in saved["inputs"] if r["param"] == "pose")
    assert "data" not in record
    shutil.move(work.parent / "big_pose.json", tmp_path / "out" / "big_pose.json")
    monkeypatch.chdir(tmp_path)
    again = rerun(tmp_path / "out" / "controlnet_pose.png", tmp_path / "again")
    assert Path(again.params["pose"]) == tmp_path / "out" / "big_pose.json"
    assert np.array_equal(pixels(tmp_path / "again" / "controlnet_pose.png"),
                          pixels(tmp_path / "out" / "controlnet_pose.png"))


def test_deleted_small_inputs_come_from_the_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                _private_user_cache: Path) -> None:
    work = copy_graph("img2img", tmp_path / "work", ["inputs/scene_64.png"])
    Engine().run(work, FAST, options(tmp_path / "out"))
    shutil.rmtree(work.parent)
    monkeypatch.chdir(tmp_path)
    again = rerun(tmp_path / "out" / "img2img.png", tmp_path / "again")
    used = Path(again.params["image"])
    assert used.is_relative_to(_private_user_cache) and used.name == "scene_64.png"
    assert used.read_bytes() == (GRAPHS / "inputs" / "scene_64.png").read_bytes()
    assert np.array_equal(pixels(tmp_path / "again" / "img2img.png"),
                          pixels(tmp_path / "out" / "img2img.png"))


def test_a_changed_file_of_the_same_name_is_not_taken(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    work = copy_graph("img2img", tmp_path / "work", ["inputs/scene_64.png"])
    Engine().run(work, FAST, options(tmp_path / "out"))
    source = work.parent / "inputs" / "scene_64.png"
    PILImage.new("RGB", (64, 64), (0, 0, 0)).save(source)  # same name, other picture
    monkeypatch.chdir(tmp_path)
    again = rerun(tmp_path / "out" / "img2img.png", tmp_path / "again")
    assert Path(again.params["image"]) != source.resolve()  # the embedded original instead
    assert np.array_equal(pixels(tmp_path / "again" / "img2img.png"),
                          pixels(tmp_path / "out" / "img2img.png"))


def _missing_big_pose(tmp_path: Path) -> tuple[Path, dict]:
    work = copy_graph("controlnet_pose", tmp_path / "work", [])
    pose = json.loads((GRAPHS / "poses" / "standing_512x512.json").read_text())
    (work.parent / "big_pose.json").write_text(json.dumps(pose) + " " * (EMBED_LIMIT + 10))
    Engine().run(work, {**FAST, "pose": "big_pose.json"}, options(tmp_path / "out"))
    png = tmp_path / "out" / "controlnet_pose.png"
    record = next(r for r in metadata(png)["inputs"] if r["param"] == "pose")
    (work.parent / "big_pose.json").unlink()
    return png, record


def test_a_missing_input_is_named_with_its_fingerprint_and_the_set(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    png, record = _missing_big_pose(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GraphError) as info:
        Engine().load(png)
    text = str(info.value)
    assert "big_pose.json" in text and record["fingerprint"] in text and "--set pose=PATH" in text
    assert "node 'skeleton'" in text and "field 'keypoints'" in text and str(png.parent) in text
    # the CLI: exit 2, the message, no traceback, nothing written
    result = CliRunner().invoke(app, ["run", str(png), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2, result.output
    assert record["fingerprint"] in result.output and "Traceback" not in result.output
    assert not (tmp_path / "cli").exists() or not any((tmp_path / "cli").iterdir())
    # and `--set` supplies it
    pose = tmp_path / "given.json"
    shutil.copy(GRAPHS / "poses" / "standing_512x512.json", pose)
    plan = Engine().load(png, {"pose": str(pose)})
    assert plan.params["pose"] == str(pose)
