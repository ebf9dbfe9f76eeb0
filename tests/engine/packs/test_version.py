"""`nodegraph --version`: nodegraph, every installed pack and the libraries, without importing them."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import nodegraph
from nodegraph.cli.app import app
from nodegraph.nodes.registry import entry_point_sources

ROOT = Path(__file__).resolve().parents[3]


def test_version_lists_nodegraph_packs_and_libraries() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"nodegraph {nodegraph.__version__}"
    assert nodegraph.__version__ == importlib.metadata.version("nodegraph")  # the two never drift apart
    packs = [line for line in lines if line.startswith("pack ")]
    assert packs == [f"pack {s.name} {s.version} ({s.module})" for s in entry_point_sources()]
    assert {"pack core 0.1.0 (nodegraph_core)", "pack diffusion 0.1.0 (nodegraph_diffusion)"} <= set(packs)
    for library in ("torch", "diffusers", "transformers", "peft"):
        assert f"{library} {importlib.metadata.version(library)}" in lines[-1]


def test_version_imports_no_pack_and_no_library(tmp_path: Path) -> None:
    """A pack whose module cannot even be imported is still listed with its version; torch stays out."""
    info = tmp_path / "zz_fake-9.9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zz_fake\nVersion: 9.9.9\n")
    (info / "entry_points.txt").write_text("[nodegraph]\nzz_fake = zz_fake_pack_that_does_not_exist\n")
    code = ("import sys\nfrom nodegraph.cli.app import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit as exc:\n    print('EXIT', exc.code)\n"
            "print('IMPORTED', sorted(m for m in ('torch', 'diffusers', 'transformers', 'cv2', "
            "'nodegraph_core', 'zz_fake_pack_that_does_not_exist') if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "pack zz_fake 9.9.9 (zz_fake_pack_that_does_not_exist)" in proc.stdout
    assert "EXIT 0" in proc.stdout and "IMPORTED []" in proc.stdout, proc.stdout
