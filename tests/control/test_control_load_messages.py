"""The control pack's loaders share the diffusion pack's messages: a ControlNet not found lists the
folders really searched and `--models`; a pickled ControlNet that cannot be read says why without
torch's `weights_only` advice; a folder without weights says so. Through `graphs/controlnet_pose.yaml`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nodegraph.cli.app import app
from nodegraph.nodes.registry import Registry, build_registry

GRAPH = Path(__file__).resolve().parents[2] / "graphs" / "controlnet_pose.yaml"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry()


def refused(registry: Registry, tmp_path: Path, controlnet: str, *args: str) -> str:
    result = CliRunner().invoke(app, ["run", str(GRAPH), "--out", str(tmp_path / "out"), "--no-cache", "-q",
                                      "--set", "steps=1", "--set", f"controlnet={controlnet}", *args],
                                obj={"registry": registry})
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
    return result.output


def test_controlnet_not_found(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODEGRAPH_MODELS", raising=False)
    text = refused(registry, tmp_path, "control_v11p_sd15_openpose", "--models", str(tmp_path))
    assert "node 'cnet', field 'path': controlnet 'control_v11p_sd15_openpose' not found" in text
    assert f"  {tmp_path}\n" in text and "models/controlnet" in text and "--models DIR" in text
    assert "--model-dir" not in text


def test_unreadable_pickled_controlnet(registry: Registry, tmp_path: Path) -> None:
    junk = tmp_path / "openpose.pth"
    junk.write_bytes(b"not a checkpoint " * 8)
    text = " ".join(refused(registry, tmp_path, str(junk), "--allow-pickle").split())
    assert f"field 'path': cannot read pickled weights '{junk}': not a PyTorch checkpoint" in text
    assert "weights_only" not in text


def test_controlnet_folder_without_weights(registry: Registry, tmp_path: Path) -> None:
    from nodegraph_diffusion.paths import BUILTIN_DIR

    folder = tmp_path / "cn"
    folder.mkdir()
    shutil.copy(BUILTIN_DIR / "tinyworld-pose" / "config.json", folder / "config.json")
    text = " ".join(refused(registry, tmp_path, str(folder)).split())
    assert f"node 'cnet', field 'path': '{folder}' holds no weights file" in text
