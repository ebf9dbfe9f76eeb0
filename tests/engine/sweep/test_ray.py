"""The Ray executor on a private Ray instance bound to 127.0.0.1 with two CPU workers: the same images as
the local executor, a worker killed mid-sweep changes nothing, and the manifest and sheet are there.

Skipped when Ray is not installed (`pip install 'nodegraph[ray]'`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from nodegraph.nodes.registry import build_registry
from nodegraph.runtime.context import RunOptions
from nodegraph.runtime.engine import Engine
from nodegraph.sweep.ray_executor import RayExecutor, ray_session, start_local_ray
from nodegraph.sweep.runner import LocalExecutor, SweepSpec, prepare_sweep, run_sweep
from nodegraph.sweep.spec import parse_axes
from nodegraph.sweep.worker import VariantOutcome
from tests.engine.sweep.helpers import FIXED, GRAPH, images_by_params, manifest

ray = pytest.importorskip("ray")

AXES = ["seed=1..4", "cfg=1,7.5"]  # 8 variants


@pytest.fixture(scope="module")
def local_ray() -> Iterator[ModuleType]:
    """One loopback Ray instance for the module, shut down at its end."""
    if ray.is_initialized():
        ray.shutdown()
    start_local_ray(num_cpus=2)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def spec() -> SweepSpec:
    return prepare_sweep(Engine(build_registry()), GRAPH, parse_axes(AXES), False, FIXED)


@pytest.fixture(scope="module")
def local_images(spec: SweepSpec, tmp_path_factory: pytest.TempPathFactory) -> dict[Any, np.ndarray]:
    """The local executor's images. Ray workers compute with one thread each, and torch's CPU kernels
    may round differently with another thread count, so the reference uses one thread too."""
    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_sweep(spec, LocalExecutor(Engine(build_registry()), RunOptions()), out)
    finally:
        torch.set_num_threads(threads)
    return images_by_params(out)


def test_local_ray_listens_on_loopback_only(local_ray: ModuleType) -> None:
    assert local_ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert {n["NodeManagerAddress"] for n in local_ray.nodes()} == {"127.0.0.1"}


def test_ray_sweep_gives_the_local_images_manifest_and_sheet(local_ray: ModuleType, spec: SweepSpec,
                                                             local_images: dict[Any, np.ndarray],
                                                             tmp_path: Path) -> None:
    out = tmp_path / "ray"
    with ray_session(None):  # joins the module's instance, leaves it running
        executor = RayExecutor(RunOptions(), workers=2)
        summary = run_sweep(spec, executor, out)
    assert local_ray.is_initialized()
    assert (summary.total, summary.ran) == (8, 8)
    entries = manifest(out)
    assert len(entries) == 8 and len({e["worker"] for e in entries}) == 2  # both workers took variants
    assert all(e["timings"]["overhead_ms"] >= 0 for e in entries)
    ray_images = images_by_params(out)
    assert ray_images.keys() == local_images.keys()
    for params, image in local_images.items():
        assert np.array_equal(ray_images[params], image), params
    assert (out / "contact_sheet.png").stat().st_size > 0
    # variants on one worker shared its model: each worker loaded the model once
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_worker.setdefault(entry["worker"], []).append(entry)
    for runs in by_worker.values():
        assert sum("model" in e["timings"]["executed"] for e in runs) == 1


def test_killing_a_worker_mid_sweep_still_gives_every_variant_once(
        local_ray: ModuleType, spec: SweepSpec, local_images: dict[Any, np.ndarray], tmp_path: Path) -> None:
    out = tmp_path / "fault"
    executor = RayExecutor(RunOptions(), workers=2)
    killed: list[str] = []

    class KillOther:
        """On the first result, kill the *other* worker, which is busy with its own variant."""

        def run(self, jobs: list[Any], on_done: Any) -> None:
            def done(outcome: VariantOutcome) -> None:
                on_done(outcome)
                if not killed:
                    victim = next(label for label in executor.labels if label != outcome.worker)
                    local_ray.kill(executor.worker_named(victim))
                    killed.append(victim)

            executor.run(jobs, done)

    summary = run_sweep(spec, KillOther(), out)
    assert killed and executor.retried >= 1
    entries = manifest(out)
    assert summary.ran == 8 and len(entries) == 8
    assert sorted(e["index"] for e in entries) == list(range(8))  # each variant exactly once
    assert sum(e["worker"] == killed[0] for e in entries) <= 1  # the dead worker finished at most one
    assert len([p for p in out.iterdir() if p.is_dir()]) == 8
    assert not list(out.rglob("*.tmp"))
    ray_images = images_by_params(out)
    for params, image in local_images.items():
        assert np.array_equal(ray_images[params], image), params


def test_cli_ray_sweep_then_resume_runs_only_the_missing_variant(local_ray: ModuleType,
                                                                 tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    out = tmp_path / "cli"
    args = ["run", str(GRAPH), "--set", "steps=2", "--sweep", "seed=1..3", "--executor", "ray",
            "--out", str(out), "-q"]
    result = CliRunner().invoke(app, [*args, "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "3 variants, 3 run, 0 already done" in result.output
    shutil.rmtree(out / manifest(out)[1]["variant"])  # lose one variant's files
    result = CliRunner().invoke(app, [*args, "--workers", "1", "--resume"])
    assert result.exit_code == 0, result.output
    assert "3 variants, 1 run, 2 already done" in result.output
    assert local_ray.is_initialized()  # the CLI joined the running instance and left it running
