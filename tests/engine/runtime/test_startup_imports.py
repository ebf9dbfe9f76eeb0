"""Commands that only read node specs must not import the libraries nodes use when they run.

`validate`, `nodes`, `plugins`, `schema` and `graph show` need names, typed ports, defaults and docs:
the packs' node modules are catalogues (light imports at the top, heavy ones inside the node bodies;
see docs/plugins.md), so these commands start in well under a second instead of paying seconds for
torch, diffusers, transformers and OpenCV. Each command runs in a fresh interpreter, with every
installed pack, and the test reads that interpreter's `sys.modules` when the command is done.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
COMFY = ROOT / "tests" / "fixtures" / "comfyui"
GRAPHS = sorted(str(p) for p in (ROOT / "graphs").glob("*.yaml"))
# Not needed to describe a node: the libraries the diffusion/control/attention packs compute with.
HEAVY = ("torch", "diffusers", "transformers", "cv2", "peft", "scipy", "numpy", "PIL")

PROBE = """
import importlib, json, runpy, sys
argv, heavy, preload = (json.loads(a) for a in sys.argv[1:4])
for name in preload:
    importlib.import_module(name)
sys.argv = ["nodegraph", *argv]
code = 0
try:
    runpy.run_module("nodegraph", run_name="__main__")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}), file=sys.__stderr__)
"""

COMMANDS = {
    "validate": ["validate", *GRAPHS],
    "nodes": ["nodes"],
    "nodes_show": ["nodes", "diffusion.sample"],
    "plugins": ["plugins"],
    "schema": ["schema"],
    "graph_show": ["graph", "show", str(ROOT / "graphs" / "controlnet_pose.yaml")],
    # ComfyUI files are read and converted with the standard library only (PNG chunks included)
    "validate_comfyui": ["validate", *(str(COMFY / f) for f in ("lora_multiple.json", "ui_img2img.json"))],
    "import_comfyui": ["import", "comfyui", str(COMFY / "ui_controlnet_multi_pose_scribble.json")],
}


def imported_by(argv: list[str], preload: tuple[str, ...] = ()) -> dict[str, object]:
    """Run `nodegraph argv` in a fresh interpreter; its exit code and which HEAVY modules it imported."""
    args = [json.dumps(argv), json.dumps(HEAVY), json.dumps(list(preload))]
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert last.startswith("{"), f"probe printed no result: {proc.stderr[-2000:]}"
    return json.loads(last)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_spec_commands_import_nothing_heavy(name: str) -> None:
    result = imported_by(COMMANDS[name])
    assert result["code"] == 0, result
    assert result["loaded"] == [], f"`nodegraph {' '.join(COMMANDS[name][:2])}` imported {result['loaded']}"


def test_probe_sees_heavy_imports() -> None:
    """The probe can fail: a module imported in the command's process is reported."""
    result = imported_by(["plugins"], preload=("cv2",))
    assert result["code"] == 0, result
    assert "cv2" in result["loaded"] and "numpy" in result["loaded"], result
