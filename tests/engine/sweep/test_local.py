"""Sweeps on the local executor: one folder per variant, manifest, contact sheet, validation up front,
only touched nodes re-run, Ctrl-C keeps finished variants, and --resume runs only the missing ones."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from nodegraph.cli.app import app
from nodegraph.nodes.registry import Registry, build_registry
from nodegraph.runtime.context import RunOptions
from nodegraph.runtime.engine import Engine
from nodegraph.sweep import runner as runner_module
from nodegraph.sweep.runner import LocalExecutor, SweepInterrupted, prepare_sweep, run_sweep
from nodegraph.sweep.spec import parse_axes
from nodegraph.sweep.worker import VariantJob, VariantOutcome
from tests.engine.sweep.helpers import FIXED, GRAPH, images_by_params, manifest, pixels

SWEEP = ["--set", "steps=2", "--sweep", "seed=1,2", "--sweep", "cfg=1,7.5"]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry()


@pytest.fixture(scope="module")
def engine(registry: Registry) -> Engine:
    return Engine(registry)


def invoke(registry: Registry, args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["run", str(GRAPH), *args], obj={"registry": registry})


def test_grid_sweep_writes_variant_folders_manifest_and_contact_sheet(registry: Registry, engine: Engine,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = invoke(registry, [*SWEEP, "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "sweep: 4 variants, 4 run, 0 already done" in result.output
    entries = manifest(out)
    assert [e["params"] for e in entries] == [{"seed": "1", "cfg": "1"}, {"seed": "1", "cfg": "7.5"},
                                              {"seed": "2", "cfg": "1"}, {"seed": "2", "cfg": "7.5"}]
    for entry in entries:
        (item,) = entry["outputs"]
        path = out / item["path"]
        assert path.parent.name == entry["variant"] and entry["variant"].endswith(entry["key"][:12])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"]
        assert set(entry["cache_keys"]) == {"model", "scheduler", "positive", "negative", "empty", "latents",
                                            "image", "save"}
        assert entry["timings"]["wall_ms"] > 0 and set(entry["timings"]["nodes"]) == set(entry["cache_keys"])
    # one process, one engine: later variants re-run only what seed/cfg touch
    assert set(entries[0]["timings"]["executed"]) == set(entries[0]["cache_keys"])
    for entry in entries[1:]:
        assert entry["timings"]["executed"] == ["latents", "image", "save"]
    # every variant's image is the image of a plain run with the same values
    images = images_by_params(out)
    assert len({im.tobytes() for im in images.values()}) == 4
    single = engine.run(GRAPH, {**FIXED, "seed": "2", "cfg": "7.5"},
                        options=RunOptions(out_dir=tmp_path / "one"))
    assert np.array_equal(pixels(single.written[0]), images[(("cfg", "7.5"), ("seed", "2"))])
    # the contact sheet: a 2x2 grid of upscaled cells plus labels, with the images in it
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width > 2 * 128 and sheet.height > 2 * 128
        arr = np.asarray(sheet.convert("RGB"))
    assert arr[:, :40].min() < 100  # the row labels ("seed=1") were drawn in the left margin
    assert not list(out.rglob(".nodegraph-staging-*")) and not list(out.rglob("*.tmp"))


def test_zip_sweep_pairs_values_and_captions_cells(registry: Registry, tmp_path: Path) -> None:
    out = tmp_path / "zip"
    result = invoke(registry, ["--set", "steps=2", "--sweep", "seed=1..3", "--sweep", "cfg=1,4,7.5", "--zip",
                               "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert [e["params"] for e in manifest(out)] == [{"seed": "1", "cfg": "1"}, {"seed": "2", "cfg": "4"},
                                                   {"seed": "3", "cfg": "7.5"}]
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width > 3 * 128 and 128 < sheet.height < 2 * 128


@pytest.mark.parametrize(("sweep", "needles"), [
    (["--sweep", "sed=1,2"], ["unknown --sweep target 'sed'", "did you mean 'seed'"]),
    (["--sweep", "latents.sed=1,2"], ["node 'latents'", "has no input 'sed'"]),
    (["--sweep", "seed=3,-1"], ["seed", "must be >= 0", "sweep variant seed=-1"]),
    (["--sweep", "steps=2,many"], ["steps", "sweep variant steps=many"]),
    (["--sweep", "seed=1,2", "--sweep", "cfg=1", "--zip"], ["same number of values"]),
    (["--set", "seed=3", "--sweep", "seed=1,2"], ["both set (--set) and swept"]),
    (["--executor", "ray"], ["apply to sweeps"]),
    (["--sweep", "seed=1", "--workers", "2"], ["apply to --executor ray"]),
    (["--sweep", "seed=1", "--executor", "dask"], ["unknown executor 'dask'"]),
])
def test_invalid_sweeps_exit_2_before_anything_runs(registry: Registry, tmp_path: Path, sweep: list[str],
                                                    needles: list[str]) -> None:
    out = tmp_path / "bad"
    result = invoke(registry, [*sweep, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output
    assert not out.exists()


def test_missing_ray_says_how_to_install(registry: Registry, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = invoke(registry, ["--set", "steps=2", "--sweep", "seed=1", "--executor", "ray",
                               "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "pip install 'nodegraph[ray]'" in result.output


class Counter:
    """Records every variant the local executor runs; raises Ctrl-C on call number `interrupt_at`."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.interrupt_at = 0


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter:
    counter = Counter()
    real = runner_module.run_variant

    def spy(engine: Engine, job: VariantJob, options: RunOptions, worker: str = "local") -> VariantOutcome:
        counter.calls.append(job.overrides)
        if len(counter.calls) == counter.interrupt_at:
            raise KeyboardInterrupt
        return real(engine, job, options, worker)

    monkeypatch.setattr(runner_module, "run_variant", spy)
    return counter


def test_ctrl_c_keeps_finished_variants_and_resume_runs_only_the_missing(
        registry: Registry, tmp_path: Path, counted: Counter) -> None:
    out = tmp_path / "resume"
    counted.interrupt_at = 3
    result = invoke(registry, [*SWEEP, "--out", str(out), "-q"])
    assert result.exit_code == 130, result.output
    assert "2 of 4 variants finished" in result.output and "--resume" in result.output
    assert len(manifest(out)) == 2
    assert len([p for p in out.iterdir() if p.is_dir()]) == 2  # the interrupted variant left nothing

    counted.calls.clear()
    counted.interrupt_at = 0
    result = invoke(registry, [*SWEEP, "--out", str(out), "-q", "--resume"])
    assert result.exit_code == 0, result.output
    assert "4 variants, 2 run, 2 already done" in result.output
    assert counted.calls == [{"steps": "2", "seed": "2", "cfg": "1"},
                             {"steps": "2", "seed": "2", "cfg": "7.5"}]
    assert len({e["key"] for e in manifest(out)}) == 4

    counted.calls.clear()
    result = invoke(registry, [*SWEEP, "--out", str(out), "-q", "--resume"])
    assert "4 variants, 0 run, 4 already done" in result.output and counted.calls == []


def test_resume_reruns_a_variant_whose_file_changed_and_ignores_a_torn_manifest_line(
        engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "r"
    spec = prepare_sweep(engine, GRAPH, parse_axes(["seed=1..3"]), False, FIXED)
    executor = LocalExecutor(engine, RunOptions())
    first = run_sweep(spec, executor, out)
    assert (first.ran, first.skipped) == (3, 0)
    damaged = out / first.entries[1]["outputs"][0]["path"]
    damaged.write_bytes(b"not the image")
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"key": "torn')  # a crash mid-line
    again = run_sweep(spec, executor, out, resume=True)
    assert (again.ran, again.skipped) == (1, 2)
    assert pixels(damaged).shape == (64, 64, 3)
    # another requested dtype gives other keys: --resume does not take fp32 results for them
    other = prepare_sweep(engine, GRAPH, parse_axes(["seed=1..3"]), False, FIXED, RunOptions(dtype="float32"))
    assert not {v.key for v in other.variants} & {v.key for v in spec.variants}
    assert run_sweep(other, executor, out, resume=True).ran == 3
    # without --resume everything runs again and the manifest starts over
    fresh = run_sweep(spec, executor, out)
    assert (fresh.ran, fresh.skipped) == (3, 0) and len(manifest(out)) == 3


def test_interrupt_through_the_library_raises_sweep_interrupted(engine: Engine, tmp_path: Path) -> None:
    spec = prepare_sweep(engine, GRAPH, parse_axes(["seed=1..3"]), False, FIXED)

    class StopAfterOne:
        def run(self, jobs: list[VariantJob], on_done) -> None:  # type: ignore[no-untyped-def]
            LocalExecutor(engine, RunOptions()).run(jobs[:1], on_done)
            raise KeyboardInterrupt

    with pytest.raises(SweepInterrupted, match="1 of 3 variants finished"):
        run_sweep(spec, StopAfterOne(), tmp_path / "i")
    assert len(manifest(tmp_path / "i")) == 1
    assert (tmp_path / "i" / "contact_sheet.png").exists()  # grey cells for the missing two
