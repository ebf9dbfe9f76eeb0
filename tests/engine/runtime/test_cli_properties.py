"""Property: whatever graph document `nodegraph run` is given, it exits 0 or 2, never with a traceback.

Unlike tests/engine/document/test_properties.py (which stops at `load_plan`), these documents go
through the CLI and are executed: node types of the core pack with random inputs, links, params and
output paths, written as YAML or JSON. On exit 2 nothing may be left in the output folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodegraph.nodes.registry import Registry
from nodegraph.runtime.staging import STAGING_PREFIX

from .safety_helpers import IMAGE, run_cli, safety_registry

MASK = IMAGE.with_name("scene_64_mask.png")
IDS = ["a", "b", "c", "img", "n-1"]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return safety_registry([])


def _core_types(registry: Registry) -> dict[str, list[str]]:
    return {t: list(s.inputs) for t, s in sorted(registry.specs.items()) if t.startswith("core.")}


links = st.builds(lambda node, out: f"@{node}{out}", st.sampled_from(IDS),
                  st.sampled_from(["", ".out", ".image", ".mask", ".nope"]))
scalars = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([-1, 0, 1, 2, 3, 7, 16, 20000, 10**40, 0.5, -2.5, 1e400]),
    st.sampled_from(["in.png", "mask.png", "missing.png", "x/y.png", "{index}.png", "../up.png", "/abs.png",
                     "a/../b.png", "dir/", ".", "luminance", "alpha", "edge", "bicubic", "$p", "$q", "$"]),
    st.text(max_size=8),
    links,
)
values = st.one_of(scalars, st.lists(st.one_of(links, scalars), max_size=3))


@st.composite
def documents(draw: st.DrawFn, types: dict[str, list[str]]) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for node_id in draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True)):
        type_name = draw(st.sampled_from([*types, "core.nope"]))
        names = types.get(type_name, ["value"]) + ["bogus"]
        chosen = draw(st.lists(st.sampled_from(names), max_size=len(names), unique=True))
        nodes[node_id] = {"type": type_name, **{n: draw(values) for n in chosen}}
    doc: dict[str, Any] = {"version": draw(st.sampled_from([1, 1, 1, 2])), "nodes": nodes}
    if draw(st.booleans()):
        doc["params"] = {"p": {"type": draw(st.sampled_from(["int", "float", "str", "path", "bool"])),
                               "default": draw(scalars)}}
    return doc


good_ints = st.integers(min_value=1, max_value=48)
bad_ints = st.one_of(st.integers(min_value=-2, max_value=80), st.sampled_from([8193, 16385, 10**40]))
good_paths = st.sampled_from(["a.png", "{index}.png", "sub/{index}/b.png", "deep/er/x.png", "{label}.png"])
bad_paths = st.one_of(
    st.sampled_from(["a/", "~/a.png", "C:/a.png", "a\\..\\..\\b.png", "a\x00b.png", "/a.png"]),
    st.text(min_size=1, max_size=10))


def _steps(ints: st.SearchStrategy[Any], wild: bool) -> dict[str, dict[str, Any]]:
    extra = ["cubic", 3, None] if wild else []
    return {
        "core.resize": {"width": ints, "height": ints,
                        "method": st.sampled_from(["nearest", "bilinear", "bicubic", "lanczos", *extra])},
        "core.crop": {"x": ints if wild else st.integers(0, 8), "y": ints if wild else st.integers(0, 8),
                      "width": ints if wild else st.integers(1, 16),
                      "height": ints if wild else st.integers(1, 16)},
        "core.pad": {"left": ints, "top": ints, "right": ints, "bottom": ints,
                     "fill": st.sampled_from(["edge", "black", "white", "gray", *extra])},
    }


@st.composite
def pipelines(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly runnable graphs: an image, a chain of edits, batches, saves; `wild` ones bend the rules."""
    wild = draw(st.booleans())
    steps = _steps(bad_ints if wild else good_ints, wild)
    sources = ["in.png", "mask.png", *(["missing.png", "graph.yaml", "."] if wild else [])]
    nodes: dict[str, Any] = {"src": {"type": "core.load_image", "path": draw(st.sampled_from(sources))}}
    last = "@src"
    for i, step in enumerate(draw(st.lists(st.sampled_from([*steps, "core.image_batch"]), max_size=3))):
        body: dict[str, Any] = {"type": step}
        if step == "core.image_batch":
            body["images"] = [last, draw(st.sampled_from([last, "@src"]))]
        else:
            body["image"] = last
            body.update({k: draw(v) for k, v in steps[step].items() if k not in ("method", "fill")
                         or draw(st.booleans())})
        nodes[f"s{i}"] = body
        last = f"@s{i}.image" if step == "core.pad" else f"@s{i}"
    for j in range(draw(st.integers(min_value=1, max_value=2))):
        path = draw(st.one_of(good_paths, bad_paths) if wild else good_paths) + ("" if j == 0 else str(j))
        nodes[f"save{j}"] = {"type": "core.save_image", "image": last, "path": path}
    if draw(st.booleans()):
        nodes["m"] = {"type": "core.load_mask", "path": draw(st.sampled_from(["mask.png", "in.png"])),
                      "channel": draw(st.sampled_from(["luminance", "alpha"]))}
        nodes["inv"] = {"type": "core.invert_mask", "mask": "@m"}
    return {"version": 1, "nodes": nodes}


# a core-pack graph usually runs in well under a second, but an in-range 8193x8193 lanczos resize saved
# twice took 18.5 s in a CI run (flaky against a 10 s deadline): the deadline only catches a hang
SETTINGS = settings(max_examples=80, deadline=timedelta(seconds=90),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def test_random_documents_run_or_exit_2(registry: Registry) -> None:
    types = _core_types(registry)
    assert {"core.load_image", "core.save_image", "core.resize"} <= set(types)

    @SETTINGS
    @given(st.one_of(documents(types), pipelines(), pipelines()), st.sampled_from(["yaml", "json"]),
           st.lists(st.sampled_from(["p=3", "p=x", "a.value=2", "b.path=z.png", "zz=1", "s0.width=9",
                                     "save0.path=../x.png", "src.path=mask.png"]), max_size=2))
    def check(doc: dict[str, Any], kind: str, sets: list[str]) -> None:
        folder = Path(tempfile.mkdtemp(prefix="nodegraph-prop-"))
        try:
            shutil.copy(IMAGE, folder / "in.png")
            shutil.copy(MASK, folder / "mask.png")
            try:
                text = json.dumps(doc) if kind == "json" else yaml.safe_dump(doc, allow_unicode=True)
            except (ValueError, OverflowError):
                return
            graph = folder / f"graph.{kind}"
            graph.write_text(text, encoding="utf-8")
            out = folder / "out"
            args = [str(graph), "--out", str(out)]
            for item in sets:
                args += ["--set", item]
            result = run_cli(registry, *args)  # raises on any exit but 0 and 2 (a traceback is exit 1)
            assert "Traceback" not in result.output
            names = [p.name for p in out.iterdir()] if out.exists() else []
            assert not [n for n in names if n.startswith(STAGING_PREFIX)]
            if result.exit_code == 2:
                assert not out.exists(), "a failed run left its output folder behind"
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    check()
