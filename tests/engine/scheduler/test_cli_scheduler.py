"""CLI: --vram-budget, --ram-budget, --optimize on `run`; `watch` is registered."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from nodegraph.cli.app import app

GRAPHS = Path(__file__).resolve().parents[3] / "graphs"


def test_run_with_budgets_and_optimize(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(GRAPHS / "txt2img.yaml"), "--out", str(tmp_path), "--set",
                                      "steps=2", "--vram-budget", "2GB", "--ram-budget", "1GiB",
                                      "--optimize", "none", "--report"])
    assert result.exit_code == 0, result.output
    assert "models: 4 loaded" in result.output
    assert (tmp_path / "report.json").read_text().count('"peak_bytes"') == 1


def test_bad_budget_and_level_are_user_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["run", str(GRAPHS / "core_text.yaml"), "--out", str(tmp_path),
                              "--vram-budget", "lots"])
    assert bad.exit_code == 2 and "is not a size" in bad.output
    level = runner.invoke(app, ["run", str(GRAPHS / "core_text.yaml"), "--out", str(tmp_path),
                                "--optimize", "ludicrous"])
    assert level.exit_code == 2 and "unknown optimize level" in level.output
    assert not (tmp_path / "prompt.txt").exists()


def test_watch_command_is_registered() -> None:
    result = CliRunner().invoke(app, ["watch", "--help"])
    assert result.exit_code == 0 and "--params" in result.output
