"""The disk cache as the CLI keeps it by default: where it lives, its size bound (LRU), safety under
corrupt entries, full disks and unusable folders, and what `--no-cache` / `--cache-dir` change."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nodegraph import Engine, RunOptions
from nodegraph.cli.app import app
from nodegraph.errors import NodegraphError
from nodegraph.runtime import cachedir, diskcache
from nodegraph.runtime.cache import Cache
from nodegraph.runtime.cachedir import cli_cache_dir, default_cache_dir, usable_cache_dir
from nodegraph.runtime.diskcache import DiskCache, DiskWriteError
from nodegraph.testing import CallCounter, toy_registry
from tests.engine.runtime.conftest import make_plan

ROOT = Path(__file__).resolve().parents[3]
KEY = "ab" * 32


def _entries(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("value.json"))


# ------------------------------------------------------------------------------------------- location


def test_default_folder_follows_env_then_xdg_then_home(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv("NODEGRAPH_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("NODEGRAPH_CACHE_DIR")
    if sys.platform in ("win32", "darwin"):
        pytest.skip("XDG applies on Linux and other Unixes")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "nodegraph"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: relative paths are invalid
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "nodegraph"


def test_the_suite_never_points_at_the_real_user_cache() -> None:
    assert Path(os.environ["NODEGRAPH_CACHE_DIR"]) != Path.home() / ".cache" / "nodegraph"


def test_max_mb_env_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODEGRAPH_CACHE_MAX_MB", "12.5")
    assert cachedir.default_max_mb() == 12.5
    for bad in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv("NODEGRAPH_CACHE_MAX_MB", bad)
        with pytest.raises(NodegraphError, match="NODEGRAPH_CACHE_MAX_MB"):
            cachedir.default_max_mb()


# ------------------------------------------------------------------------------------------- folders


def test_a_file_or_an_uncreatable_path_is_a_clear_error(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(NodegraphError, match=r"--cache-dir '.*afile' is a file, not a folder"):
        usable_cache_dir(afile, "--cache-dir")
    with pytest.raises(NodegraphError, match=r"--cache-dir '.*afile/sub' cannot be created"):
        usable_cache_dir(afile / "sub", "--cache-dir")
    assert afile.read_text() == "x"


def test_a_folder_refusing_writes_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root writes into a chmod 555 folder, so the refusal is simulated at the probe (see the next test
    for the real permission case)."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cachedir.tempfile, "mkstemp", refuse)
    with pytest.raises(NodegraphError, match=r"'.*ro' is not writable \(Permission denied\)"):
        usable_cache_dir(tmp_path / "ro", "--cache-dir")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores folder permissions")
def test_a_read_only_folder_is_a_clear_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(NodegraphError, match="is not writable"):
            usable_cache_dir(ro, "--cache-dir")
    finally:
        ro.chmod(0o755)


def test_cli_cache_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli_cache_dir(True, None) == (None, None)
    assert cli_cache_dir(False, tmp_path / "c") == (tmp_path / "c", None)
    monkeypatch.setenv("NODEGRAPH_CACHE_DIR", str(tmp_path / "d"))
    assert cli_cache_dir(False, None) == (tmp_path / "d", None)
    with pytest.raises(NodegraphError, match="--no-cache and --cache-dir"):
        cli_cache_dir(True, tmp_path / "c")
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("NODEGRAPH_CACHE_DIR", str(tmp_path / "f"))
    folder, note = cli_cache_dir(False, None)  # the default folder only turns the disk cache off
    assert folder is None and note is not None
    assert note.startswith("disk cache off for this run: $NODEGRAPH_CACHE_DIR '") and "is a file" in note


# ------------------------------------------------------------------------------------------- the CLI

TEXT_GRAPH = ROOT / "graphs" / "core_text.yaml"


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, ["run", str(TEXT_GRAPH), *args])


def test_second_cli_run_comes_from_the_default_disk_cache(tmp_path: Path,
                                                         _private_user_cache: Path) -> None:
    first = _cli("--out", str(tmp_path / "a"), "--report", "-q")
    assert first.exit_code == 0, first.output
    assert _entries(_private_user_cache), "the first run stores its results in the user cache folder"
    second = _cli("--out", str(tmp_path / "b"), "--report", "-q")
    assert second.exit_code == 0, second.output
    one = json.loads((tmp_path / "a" / "report.json").read_text())
    two = json.loads((tmp_path / "b" / "report.json").read_text())
    assert one["executed"] and not one["cached"]
    assert two["cached"] == one["executed"] and two["executed"] == []


def test_no_cache_writes_nothing_and_recomputes(tmp_path: Path, _private_user_cache: Path) -> None:
    for out in ("a", "b"):
        result = _cli("--out", str(tmp_path / out), "--report", "-q", "--no-cache")
        assert result.exit_code == 0, result.output
    assert not _entries(_private_user_cache)
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    assert again["cached"] == [] and again["executed"]


@pytest.mark.parametrize("case", ["file", "under_file"])
def test_bad_cache_dir_exits_2_before_running(tmp_path: Path, case: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    target = afile if case == "file" else afile / "sub"
    result = _cli("--out", str(tmp_path / "out"), "--cache-dir", str(target))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "--cache-dir" in result.output
    assert str(target) in result.output.replace("\n", "")
    assert not (tmp_path / "out").exists()


def test_unusable_default_cache_degrades_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("NODEGRAPH_CACHE_DIR", str(tmp_path / "f" / "cache"))
    result = _cli("--out", str(tmp_path / "out"), "--report")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any(n.startswith("disk cache off for this run") for n in report["notes"]), report["notes"]
    assert "disk cache off" in result.output


# ------------------------------------------------------------------------------------------- entries


def test_corrupt_entries_are_misses_and_get_replaced(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "c")
    missing_tensor = {"format": 1, "tensors": True, "value": {"out": {"$tensor": "t0"}}}
    for corrupt in ("{not json", json.dumps(missing_tensor)):
        assert disk.put(KEY, {"out": torch.arange(4)})
        folder = _entries(tmp_path / "c")[0]
        (folder / "value.json").write_text(corrupt)
        (folder / "tensors.safetensors").write_bytes(b"\x00garbage")
        assert disk.get(KEY) is None  # a miss, not an error ...
        assert not _entries(tmp_path / "c")  # ... and gone, so the next put replaces it
        assert disk.put(KEY, {"out": torch.arange(4)})
        assert torch.equal(disk.get(KEY)["out"], torch.arange(4))


def test_a_leftover_folder_without_value_json_is_replaced(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "c")
    broken = tmp_path / "c" / KEY[:2] / KEY
    broken.mkdir(parents=True)
    (broken / "tensors.safetensors").write_bytes(b"torn")
    assert disk.put(KEY, {"out": 1.5}) and disk.get(KEY) == {"out": 1.5}


def test_full_disk_drops_the_entry_and_leaves_nothing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    disk = DiskCache(tmp_path / "c")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DiskCache, "_write", staticmethod(full))
    with pytest.raises(DiskWriteError, match="No space left on device"):
        disk.put(KEY, {"out": torch.zeros(3)})
    leftovers = [p for p in (tmp_path / "c").rglob("*") if p.is_file() or p.name.startswith(".tmp")]
    assert leftovers == []


def test_full_disk_never_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = CallCounter()
    engine = Engine(toy_registry(counter), cache_dir=tmp_path / "c")
    real_write = DiskCache._write

    def full_once_past_first(tmp: Path, encoder: object, tree: object) -> int:
        if _entries(tmp_path / "c"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(tmp, encoder, tree)

    monkeypatch.setattr(DiskCache, "_write", staticmethod(full_once_past_first))
    plan = make_plan(engine.registry, {"a": {"type": "toy.number", "value": 2.0},
                                       "b": {"type": "toy.add", "a": "@a", "b": "@a"}})
    result = engine.run(plan, options=RunOptions(out_dir=tmp_path / "out"))
    assert result.outputs["b"]["out"] == 4.0 and result.executed == ["a", "b"]
    assert engine.cache.stats.disk_failures == 1 and len(_entries(tmp_path / "c")) == 1
    assert [n for n in result.notes if n.startswith("disk cache: could not store a result (No space left")]
    assert not [p for p in (tmp_path / "c").rglob(".tmp*")]


def test_size_bound_evicts_least_recently_used(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "c")
    keys = [f"{i:02d}" * 32 for i in range(6)]
    for i, key in enumerate(keys):
        disk.put(key, {"out": torch.zeros(1000)})  # ~4 KB each
        os.utime(disk._folder(key) / "value.json", (1000 + i, 1000 + i))  # written in this order
    size = sum(f.stat().st_size for f in (tmp_path / "c").rglob("*") if f.is_file())
    assert disk.get(keys[0]) is not None  # read now: the most recent
    trimmed = disk.trim(int(size * 0.6), keep_fraction=1.0)
    assert trimmed.entries == 6 and trimmed.removed == 3
    assert [k for k in keys if k in disk] == [keys[0], keys[4], keys[5]]
    assert disk.trim(int(size * 0.6)).removed == 0  # within the bound: nothing to do


def test_trim_removes_stale_temporary_folders_only(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "c")
    old = tmp_path / "c" / "ab" / ".tmp-dead-x"
    new = tmp_path / "c" / "ab" / ".tmp-live-y"
    others = [tmp_path / "c" / "inputs" / ("f" * 64), tmp_path / "c" / "ab" / "notes"]  # not entries
    for folder in (old, new, *others):
        folder.mkdir(parents=True)
    for folder in (old, *others):
        os.utime(folder, (1, 1))
    disk.trim(0)
    assert not old.exists() and new.exists()
    assert all(folder.exists() for folder in others)  # what else lives in the folder is left alone


def test_engine_trims_to_its_bound_after_a_run(tmp_path: Path) -> None:
    engine = Engine(toy_registry(CallCounter()), cache_dir=tmp_path / "c", cache_disk_mb=0)
    plan = make_plan(engine.registry, {"a": {"type": "toy.number", "value": 1.0}})
    engine.run(plan, options=RunOptions(out_dir=tmp_path / "out"))
    assert engine.cache.stats.disk_writes == 1 and engine.cache.stats.disk_evictions == 1
    assert not _entries(tmp_path / "c")


def test_the_size_scan_is_rate_limited(tmp_path: Path) -> None:
    """Scanning costs ~0.07 ms per entry: due after 1/20 of the bound is written, or 10 minutes after
    any process's last scan, not after every run."""
    disk = DiskCache(tmp_path / "c")
    assert disk.trim_due(1, 10**6)  # never scanned
    disk.trim(10**6)
    assert not disk.trim_due(1, 10**6)  # just scanned, little written
    assert disk.trim_due(60_000, 10**6)  # over 1/20 of the bound written
    os.utime(tmp_path / "c" / diskcache.TRIM_STAMP, (1, 1))
    assert DiskCache(tmp_path / "c").trim_due(1, 10**6)  # another process: the stamp is shared
    disk.put(KEY, {"out": torch.zeros(10)})
    assert disk.bytes_written == sum(f.stat().st_size for f in disk._folder(KEY).iterdir())


def test_concurrent_writers_of_one_key_both_succeed(tmp_path: Path) -> None:
    """Two caches (as two processes) storing the same key: the second finds the first's entry."""
    one, two = DiskCache(tmp_path / "c"), DiskCache(tmp_path / "c")
    assert one.put(KEY, {"out": torch.ones(2)})
    assert two.put(KEY, {"out": torch.ones(2)})
    assert torch.equal(two.get(KEY)["out"], torch.ones(2)) and len(_entries(tmp_path / "c")) == 1


def test_an_explicit_cache_folder_in_the_library_is_checked(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(NodegraphError, match="is a file, not a folder"):
        Cache(disk_dir=tmp_path / "f")


def test_disk_write_error_keeps_the_memory_tier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(disk_dir=tmp_path / "c")
    monkeypatch.setattr(diskcache.DiskCache, "put",
                        lambda self, key, outputs: (_ for _ in ()).throw(DiskWriteError("disk full")))
    cache.put(KEY, {"out": 1})
    assert cache.get(KEY) == {"out": 1}
    assert cache.end_run() == ["disk cache: could not store a result (disk full); the run went on without it"]
    assert cache.end_run() == []


def test_headline_graph_second_run_only_saves_and_gives_the_same_pixels(tmp_path: Path) -> None:
    """The issue's case: `nodegraph run graphs/controlnet_pose.yaml` twice; the second run computes
    nothing but the two saves (everything else is read from the default disk cache) and writes the
    same pixels."""
    import numpy as np
    from PIL import Image as PILImage

    graph = ROOT / "graphs" / "controlnet_pose.yaml"
    for out in ("a", "b"):
        result = CliRunner().invoke(app, ["run", str(graph), "--out", str(tmp_path / out), "-q", "--report",
                                          "--set", "steps=4"])
        assert result.exit_code == 0, result.output
    second = json.loads((tmp_path / "b" / "report.json").read_text())
    assert sorted(second["executed"]) == ["save", "save_pose"]
    for name in ("controlnet_pose.png", "pose_skeleton.png"):
        a, b = (np.asarray(PILImage.open(tmp_path / out / name)) for out in ("a", "b"))
        assert a.shape == b.shape and np.array_equal(a, b)


_STRESS = """
import sys
from pathlib import Path
from nodegraph.runtime.diskcache import DiskCache
disk = DiskCache(Path(sys.argv[1]))
bad = 0
for round_ in range(150):
    for i in range(8):
        key = f"{i:02d}" * 32
        disk.put(key, {"out": [i] * 50, "name": f"v{i}"})
        got = disk.get(key)
        if got is not None and got != {"out": [i] * 50, "name": f"v{i}"}:
            bad += 1
    if round_ % 10 == 0:
        disk.trim(2000)  # far below the folder's size: entries vanish while the other process reads
print(bad)
"""


def test_processes_writing_reading_and_trimming_at_once_never_see_half_an_entry(tmp_path: Path) -> None:
    import subprocess

    folder = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-c", _STRESS, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "0", "a reader got a wrong or partial value"
    leftovers = [p for p in folder.rglob("*") if p.name.startswith((".tmp", ".trash"))]
    assert leftovers == []


_PROBE = """
import atexit, sys
atexit.register(lambda: print("TORCH", "torch" in sys.modules))
from nodegraph.cli.app import main
main(sys.argv[1:])
"""


def test_a_fully_cached_run_of_handles_does_not_import_torch(tmp_path: Path) -> None:
    """Reading entries that hold no tensors (model handles, scheduler specs) must not import torch, so
    a run that executes nothing pays no torch import (the tensor loader is imported only for entries
    with tensors)."""
    import subprocess

    graph = tmp_path / "models.yaml"
    graph.write_text("version: 1\nnodes:\n"
                     "  model: {type: diffusion.load_model, path: 'builtin:tinyworld'}\n"
                     "  sched: {type: diffusion.scheduler, model_scheduler: '@model.scheduler', "
                     "name: euler}\n")
    cache = tmp_path / "cache"
    options = RunOptions(out_dir=tmp_path / "a", show_progress=False)
    first = Engine(cache_dir=cache).run(graph, options=options)
    assert first.executed == ["model", "sched"]
    env = {**os.environ, "NODEGRAPH_CACHE_DIR": str(cache)}
    command = [sys.executable, "-c", _PROBE, "run", str(graph), "--out", str(tmp_path / "b"), "-q",
               "--report"]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "b" / "report.json").read_text())["executed"] == []
    assert "TORCH False" in proc.stdout, (proc.stdout, proc.stderr)
