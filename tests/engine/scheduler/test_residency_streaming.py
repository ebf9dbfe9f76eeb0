"""The residency manager's event log and its choice to stream a model past its budget (fake devices).

A fake `Streaming` adapter records what the manager asks of it; its plan keeps `per_block` bytes per
group, so the tests can set when streaming fits and when it does not.
"""

from __future__ import annotations

from typing import Any

from nodegraph.runtime.residency import ResidencyManager
from nodegraph.runtime.streaming import StreamPlan
from tests.engine.scheduler.conftest import FakeModel, fake_manager

GPU = "cuda:0"


class FakeStreaming:
    """Streams any FakeModel with `group` bytes on the device at once; records the calls."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.calls: list[tuple[str, str, int]] = []

    def stream(self, value: Any, onload_device: str, budget_bytes: int) -> StreamPlan:
        self.calls.append(("stream", value.name, budget_bytes))
        value.streamed_to = onload_device
        return StreamPlan(self.group, 3, f"in groups of 2 blocks ({self.group} B per group)")

    def unstream(self, value: Any) -> None:
        self.calls.append(("unstream", value.name, 0))
        value.streamed_to = None


def use(manager: ResidencyManager, name: str, streaming: FakeStreaming | None = None) -> Any:
    return manager.use(name, lambda: FakeModel(name), device=GPU, label=name, streaming=streaming)


def events(manager: ResidencyManager) -> list[tuple[str, str]]:
    return [(e.event, e.model) for e in manager.stats.events]


def test_the_event_log_says_what_left_before_what_came() -> None:
    manager = fake_manager({"clip": 30, "t5": 50, "transformer": 80}, vram_budget=100)
    with use(manager, "clip"):
        pass
    with use(manager, "t5"):
        pass
    with use(manager, "transformer"):
        pass
    assert events(manager) == [
        ("loaded", "clip"), ("placed", "clip"), ("loaded", "t5"), ("placed", "t5"),
        ("loaded", "transformer"), ("offloaded", "clip"), ("offloaded", "t5"), ("placed", "transformer")]
    rows = manager.stats.since({"loads": 0, "moves": 0, "evictions": 0, "offloads": 0, "notes": 0})["events"]
    assert rows[-1] == {"event": "placed", "model": "transformer", "bytes": 80, "device": GPU}
    assert manager.stats.events[-1].text() == f"placed transformer (0.0 MB) on {GPU}"


def test_a_model_past_the_room_is_streamed_within_it_and_said_so() -> None:
    streaming = FakeStreaming(group=40)
    manager = fake_manager({"t5": 50, "transformer": 150}, vram_budget=100)
    with use(manager, "t5"):
        with use(manager, "transformer", streaming) as model:  # T5 pinned: 50 B of room
            assert model.streamed_to == GPU and model.moves == []  # weights stay on the host
            assert manager.where("transformer") == "cpu"
            assert manager.streamed("transformer").resident_bytes == 40
            assert manager.resident_bytes(GPU) == 90
    assert streaming.calls == [("stream", "transformer", 50)]
    assert events(manager)[-1] == ("streamed", "transformer")
    assert manager.stats.events[-1].detail == "in groups of 2 blocks (40 B per group)"
    (note,) = manager.stats.notes
    assert note.startswith("transformer (0.0 MB) does not fit the 0.0 MB free of the 0.0 MB budget on "
                           f"{GPU}: streamed in groups of 2 blocks")
    assert manager.stats.peak_bytes[GPU] == 90


def test_streaming_is_kept_while_it_fits_and_undone_when_the_model_fits_whole() -> None:
    streaming = FakeStreaming(group=40)
    manager = fake_manager({"transformer": 150, "vae": 30}, vram_budget=100)
    for _ in range(2):
        with use(manager, "transformer", streaming):
            pass
    assert [c[0] for c in streaming.calls] == ["stream"]  # the second use streams as the first
    with use(manager, "vae"):  # fits beside the streamed part: nothing moves
        pass
    assert manager.streamed("transformer") is not None
    manager.vram_budget = 200
    with use(manager, "transformer", streaming) as model:
        assert model.streamed_to is None and model.location == GPU
    assert [c[0] for c in streaming.calls] == ["stream", "unstream"]
    assert events(manager)[-2:] == [("unstreamed", "transformer"), ("placed", "transformer")]
    assert manager.streamed("transformer") is None


def test_an_idle_streamed_model_holds_nothing_on_the_device() -> None:
    """Its groups leave after each call: the VAE is placed beside it and it keeps its hooks for next time."""
    streaming = FakeStreaming(group=60)
    manager = fake_manager({"transformer": 150, "vae": 90}, vram_budget=100)
    with use(manager, "transformer", streaming):
        assert manager.resident_bytes(GPU) == 60
    assert manager.resident_bytes(GPU) == 0
    with use(manager, "vae"):
        pass
    assert events(manager)[-1] == ("placed", "vae") and manager.stats.offloads == 0
    with use(manager, "vae"), use(manager, "transformer", streaming):  # the VAE pinned: 10 B of room
        pass
    assert [c[0] for c in streaming.calls] == ["stream", "unstream", "stream"]
    assert streaming.calls[-1] == ("stream", "transformer", 10)


def test_without_an_adapter_a_model_past_the_budget_is_placed_anyway() -> None:
    manager = fake_manager({"transformer": 150}, vram_budget=100)
    with use(manager, "transformer") as model:
        assert model.location == GPU
    assert events(manager)[-1] == ("placed", "transformer")
    assert any("'transformer' needs" in n and "placed anyway" in n for n in manager.stats.notes)


def test_a_group_larger_than_the_room_is_streamed_with_a_note() -> None:
    streaming = FakeStreaming(group=120)  # one block alone exceeds the budget
    manager = fake_manager({"transformer": 300}, vram_budget=100)
    with use(manager, "transformer", streaming):
        pass
    assert events(manager)[-1] == ("streamed", "transformer")
    assert any("streamed in the smallest groups it has" in n for n in manager.stats.notes)


def test_offload_idle_unstreams() -> None:
    streaming = FakeStreaming(group=40)
    manager = fake_manager({"transformer": 150}, vram_budget=100)
    with use(manager, "transformer", streaming):
        pass
    assert manager.offload_idle() == 1
    assert manager.streamed("transformer") is None and manager.resident_bytes(GPU) == 0
