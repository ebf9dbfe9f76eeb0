"""The residency manager under memory budgets, with fake devices and injected sizes."""

from __future__ import annotations

import threading

import pytest

from tests.engine.scheduler.conftest import FakeModel, fake_manager

GPU = "cuda:0"


def use(manager, name: str, device: str = GPU):  # noqa: ANN001, ANN201 - test shorthand
    return manager.use(name, lambda: FakeModel(name), device=device)


def test_lru_offload_keeps_the_vram_budget() -> None:
    manager = fake_manager({"a": 60, "b": 50, "c": 30}, vram_budget=100)
    for name in ("a", "b", "c", "a"):
        with use(manager, name) as model:
            assert model.location == GPU
            assert manager.resident_bytes(GPU) <= 100
    assert manager.stats.offloads == 2  # a out for b; b (least recent) out for a; c fits beside both
    assert manager.where("a") == GPU and manager.where("b") == "cpu"
    assert manager.load_count() == 3  # offloaded models stay in RAM: never loaded twice
    assert manager.stats.peak_bytes[GPU] <= 100


def test_least_recently_used_goes_first() -> None:
    manager = fake_manager({"a": 40, "b": 40, "c": 40}, vram_budget=100)
    for name in ("a", "b", "a", "c"):  # a was used after b: b is the least recently used
        with use(manager, name):
            pass
    assert manager.where("b") == "cpu"
    assert manager.where("a") == GPU and manager.where("c") == GPU


def test_pinned_models_are_never_evicted_and_a_note_says_the_budget_is_exceeded() -> None:
    manager = fake_manager({"a": 60, "b": 50}, vram_budget=100)
    with use(manager, "a"), use(manager, "b") as b:
        assert manager.where("a") == GPU and b.location == GPU
    assert manager.stats.offloads == 0
    assert any("'b' needs" in note and "placed anyway" in note for note in manager.stats.notes)


def test_components_move_independently() -> None:
    """Text encoder off the GPU while the UNet samples, VAE joins the UNet when both fit."""
    manager = fake_manager({"te": 30, "unet": 80, "vae": 15}, vram_budget=100)
    with use(manager, "te"):
        pass
    with use(manager, "unet"):
        assert manager.where("te") == "cpu"
    with use(manager, "vae"):
        assert manager.where("unet") == GPU
    assert manager.resident_bytes(GPU) == 95


def test_past_the_ram_budget_models_are_dropped_and_loaded_again() -> None:
    manager = fake_manager({"a": 60, "b": 60}, ram_budget=100)
    for name in ("a", "b", "a"):
        with use(manager, name, device="cpu"):
            assert manager.resident_bytes("cpu") <= 100
    assert manager.load_count("a") == 2 and manager.load_count("b") == 1
    assert "b" not in manager and manager.stats.evictions == 2


def test_offloaded_models_past_the_ram_budget_are_dropped() -> None:
    manager = fake_manager({"a": 60, "b": 60, "c": 60}, vram_budget=70, ram_budget=70)
    for name in ("a", "b", "c"):
        with use(manager, name):
            pass
    # a offloaded for b, then b for c, which pushed RAM past 70: a (least recent) dropped
    assert "a" not in manager and manager.where("b") == "cpu" and manager.where("c") == GPU
    report = manager.stats.since({"loads": 0, "moves": 0, "evictions": 0, "offloads": 0, "notes": 0})
    assert report["offloads"] == 2 and report["drops"] == 1 and report["loads"] == 3


def test_per_device_budgets_with_a_second_device() -> None:
    manager = fake_manager({"a": 50, "b": 50, "c": 50}, vram_budget={"cuda:0": 60, "cuda:1": 120})
    with use(manager, "a", "cuda:0"), use(manager, "b", "cuda:1"):
        pass
    with use(manager, "c", "cuda:1"):
        pass
    assert manager.where("a") == "cuda:0"
    assert manager.where("b") == "cuda:1" and manager.where("c") == "cuda:1"
    with use(manager, "b", "cuda:0") as b:  # b moves across; a makes room on cuda:0
        assert b.location == "cuda:0"
    assert manager.where("a") == "cpu"


def test_acquire_and_pin_is_atomic_across_threads() -> None:
    """Two threads take turns with models that do not fit together; none is moved while in use."""
    manager = fake_manager({"a": 80, "b": 80}, vram_budget=100)
    errors: list[str] = []

    def worker(name: str) -> None:
        for _ in range(50):
            with use(manager, name) as model:
                if model.location != GPU:
                    errors.append(f"{name} used while on {model.location}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(e.pins == 0 for e in manager._entries.values())


def test_real_module_changes_dtype_by_reloading_not_by_a_lossy_round_trip() -> None:
    torch = pytest.importorskip("torch")
    from nodegraph.runtime.residency import ResidencyManager

    manager = ResidencyManager()
    torch.manual_seed(0)
    original = torch.nn.Linear(4, 4)
    reference = original.weight.detach().clone()

    def load() -> torch.nn.Module:
        fresh = torch.nn.Linear(4, 4)
        fresh.load_state_dict(original.state_dict())
        return fresh

    with manager.use("m", load, device=torch.device("cpu"), dtype=torch.float16) as m:
        assert m.weight.dtype == torch.float16
    with manager.use("m", load, device=torch.device("cpu"), dtype=torch.float32) as m:
        assert torch.equal(m.weight, reference)
    assert manager.load_count("m") == 2
