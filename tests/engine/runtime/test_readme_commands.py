"""The README's quick start and CI must not drift apart: CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quick_start_is_two_commands_setting_up_and_running_the_headline_and_the_tests() -> None:
    run, test = quick_start_commands()
    assert "\n" not in run and "\n" not in test
    assert run.endswith("nodegraph run graphs/controlnet_pose.yaml")
    assert (ROOT / "graphs" / "controlnet_pose.yaml").is_file()
    assert "pip install torch==2.13.0" in run and "pip install torch==2.13.0" in test
    assert test.endswith("pytest")


def test_ci_runs_the_readme_test_command() -> None:
    _, test = quick_start_commands()
    after_venv = test.split("&& . .venv/bin/activate && ", 1)[1]
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert after_venv in ci_lines
