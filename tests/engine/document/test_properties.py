"""Property: whatever a graph file holds, load_plan returns a Plan or raises GraphError, nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodegraph.document.load import load_plan
from nodegraph.document.plan import Plan
from nodegraph.errors import GraphError
from nodegraph.testing import toy_registry

REGISTRY = toy_registry(with_installed=False)
TYPES = sorted(REGISTRY.specs) + ["toy.nope", "", "core.number"]
INPUTS = sorted({n for s in REGISTRY.specs.values() for n in s.inputs}) + ["type", "bogus"]
IDS = ["a", "b", "c", "n-1", "_x", "1bad", "a.b", ""]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["@a", "@b.low", "@c.out", "@a.b.c", "@", "@@x", "$p", "$q", "$", "$$x", "$5 off"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=8)
node_bodies = st.one_of(
    st.dictionaries(st.sampled_from(INPUTS), values, max_size=4).map(dict),
    st.fixed_dictionaries({"type": st.sampled_from(TYPES)},
                          optional={k: values for k in INPUTS if k != "type"}),
    values,
)
param_specs = st.one_of(values, st.fixed_dictionaries(
    {"type": st.sampled_from(["str", "int", "float", "bool", "path", "list", "nope"])},
    optional={"default": values, "minimum": values, "maximum": values, "choices": values, "x": values}))
documents = st.one_of(
    values,
    st.fixed_dictionaries(
        {"nodes": st.one_of(st.dictionaries(st.sampled_from(IDS), node_bodies, max_size=5), values)},
        optional={"version": st.sampled_from([1, 2, "1", True, None]), "params": st.one_of(
            st.dictionaries(st.sampled_from(["p", "q", "1p"]), param_specs, max_size=2), values),
            "description": values, "metadata": values, "extra": values},
    ),
)
overrides = st.dictionaries(st.sampled_from(["p", "q", "a.value", "b.x", "a.type", "zz", "a.b.c", ""]),
                            st.one_of(st.text(max_size=8), values), max_size=3)


def _load(source: Any, **kwargs: Any) -> None:
    try:
        result = load_plan(source, REGISTRY, **kwargs)
    except GraphError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
        return
    assert isinstance(result, Plan)
    json.dumps(result.resolved)  # the resolved document is plain JSON data


SETTINGS = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(documents, overrides)
def test_random_documents(doc: Any, sets: dict[str, Any]) -> None:
    _load(doc if isinstance(doc, dict) else {"nodes": doc}, overrides=sets)


@SETTINGS
@given(documents, st.sampled_from(["yaml", "json"]))
def test_random_documents_as_files(tmp_path_factory: Any, doc: Any, kind: str) -> None:
    path: Path = tmp_path_factory.mktemp("g") / f"graph.{kind}"
    try:
        text = json.dumps(doc) if kind == "json" else yaml.safe_dump(doc, allow_unicode=True)
    except (ValueError, OverflowError):
        return
    path.write_text(text, encoding="utf-8")
    _load(path)


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace"))),
       st.sampled_from([".yaml", ".json", ".yml"]))
def test_random_bytes(tmp_path_factory: Any, data: bytes, suffix: str) -> None:
    path: Path = tmp_path_factory.mktemp("g") / f"graph{suffix}"
    path.write_bytes(data)
    _load(path)
