"""load_plan on valid graphs: link forms, params, overrides, escapes, defaults, lines, resolved data."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from nodegraph.document.load import load_plan
from nodegraph.document.plan import Link
from nodegraph.errors import GraphError
from nodegraph.nodes.registry import Registry

from .conftest import GRAPHS_OK


def doc(**nodes: Any) -> dict[str, Any]:
    return {"version": 1, "nodes": nodes}


def problems_of(source: Any, registry: Registry, overrides: dict[str, Any] | None = None) -> str:
    with pytest.raises(GraphError) as info:
        load_plan(source, registry, overrides)
    return str(info.value)


def test_link_forms_and_dag(toys: Registry) -> None:
    plan = load_plan(GRAPHS_OK / "toy_chain.yaml", toys)
    assert list(plan.nodes) == ["a", "b", "total", "scaled", "text", "at"]
    assert plan.nodes["b"].links == {"x": Link("a", "out")}
    assert plan.nodes["total"].links == {"values": [Link("b", "low"), Link("b", "high"), Link("a", "out")]}
    assert sorted(plan.dag.edges) == sorted([("a", "b"), ("b", "total"), ("a", "total"), ("total", "scaled"),
                                             ("scaled", "text"), ("a", "at")])
    assert set(plan.dag.nodes) == set(plan.nodes)
    assert plan.description == "toy chain"
    assert plan.file == GRAPHS_OK / "toy_chain.yaml"


def test_params_defaults_and_escapes(toys: Registry) -> None:
    plan = load_plan(GRAPHS_OK / "toy_chain.yaml", toys)
    assert plan.params == {"seed": 7, "label": "total: {}"}
    assert plan.nodes["scaled"].literals == {"factor": 7}
    assert plan.nodes["text"].literals == {"template": "total: {}"}
    assert plan.nodes["at"].literals == {"template": "@{}"}  # "@@{}" is the escaped text "@{}"
    assert plan.nodes["a"].literals == {"value": 2.0}


def test_defaults_fill_missing_optional_inputs(toys: Registry) -> None:
    plan = load_plan(doc(n={"type": "toy.number", "value": 1}, s={"type": "toy.scale", "x": "@n"}), toys)
    assert plan.nodes["s"].literals == {"factor": 2}
    assert plan.nodes["s"].links == {"x": Link("n", "out")}


def test_line_numbers_of_nodes_and_fields(toys: Registry, tmp_path: Path) -> None:
    plan = load_plan(GRAPHS_OK / "toy_chain.yaml", toys)
    assert plan.nodes["a"].line == 8 and plan.nodes["at"].line == 13
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nnodes:\n  n:\n    type: toy.scale\n    x: 1\n    factor: 1000\n")
    with pytest.raises(GraphError) as info:
        load_plan(bad, toys)
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.node, problem.field) == (str(bad), 6, "n", "factor")
    assert "less than or equal to 100" in problem.message


def test_json_graph_has_lines_and_subtypes_fit(toys: Registry) -> None:
    plan = load_plan(GRAPHS_OK / "toy_dogs.json", toys)
    assert plan.nodes["hello"].links == {"pet": Link("rex", "out")}
    assert plan.nodes["good"].line == 7


def test_subtype_does_not_fit_the_other_way(toys: Registry) -> None:
    text = problems_of(doc(pet={"type": "toy.animal", "name": "Tom"},
                           hi={"type": "toy.greet_dog", "pet": "@pet"}), toys)
    assert "output 'pet.out' is Animal, input 'pet' expects Dog" in text


def test_int_output_fits_float_input(toys: Registry, registry: Registry) -> None:
    source = doc(i={"type": "core.integer", "value": 3}, s={"type": "toy.scale", "x": "@i"})
    plan = load_plan(source, registry)
    assert plan.nodes["s"].links == {"x": Link("i", "out")}


def test_single_element_link_into_list_input_becomes_a_list(toys: Registry) -> None:
    plan = load_plan(doc(n={"type": "toy.number", "value": 1}, s={"type": "toy.sum", "values": "@n"}), toys)
    assert plan.nodes["s"].links == {"values": [Link("n", "out")]}


def test_literal_list_with_params(registry: Registry) -> None:
    source = {"version": 1, "params": {"who": {"type": "str", "default": "cat"}},
              "nodes": {"j": {"type": "core.join_text", "parts": ["a", "$who", "$$5"], "separator": " "}}}
    plan = load_plan(source, registry)
    assert plan.nodes["j"].literals == {"parts": ["a", "cat", "$5"], "separator": " "}


def test_yaml_features(toys: Registry) -> None:
    plan = load_plan(GRAPHS_OK / "yaml_features.yaml", toys)
    assert plan.params == {"rate": 0.001}
    assert plan.nodes["date"].literals == {"value": 1.5, "template": "2024-01-01"}
    assert plan.nodes["date"].spec.type_name == "toy.format"
    assert "yes" in plan.nodes


def test_overrides_read_yaml_scalars(toys: Registry) -> None:
    path = GRAPHS_OK / "toy_chain.yaml"
    plan = load_plan(path, toys, {"seed": "3", "label": "a cat", "a.value": "2.5"})
    assert plan.params == {"seed": 3, "label": "a cat"}
    assert plan.nodes["scaled"].literals["factor"] == 3
    assert plan.nodes["a"].literals["value"] == 2.5
    plan = load_plan(path, toys, {"label": "true", "at.template": "yes {}", "scaled.factor": 4})
    assert plan.params["label"] == "true"  # str params take the text as given
    assert plan.nodes["at"].literals["template"] == "yes {}"
    assert plan.nodes["scaled"].literals["factor"] == 4


def test_override_text_that_yaml_reads_otherwise(toys: Registry) -> None:
    plan = load_plan(GRAPHS_OK / "toy_chain.yaml", toys, {"at.template": "yes"})
    assert plan.nodes["at"].literals["template"] == "yes"  # YAML says True; the str input takes the text
    again = load_plan(plan.resolved, toys)
    assert again.nodes["at"].literals["template"] == "yes"


def test_override_can_relink(toys: Registry) -> None:
    plan = load_plan(GRAPHS_OK / "toy_chain.yaml", toys, {"scaled.x": "@b.high"})
    assert plan.nodes["scaled"].links == {"x": Link("b", "high")}
    assert not plan.dag.has_edge("total", "scaled")


def test_override_problems(toys: Registry) -> None:
    path = GRAPHS_OK / "toy_chain.yaml"
    text = problems_of(path, toys, {"sed": "3"})
    assert "unknown --set target 'sed' (params: seed, label" in text and "did you mean 'seed'?" in text
    text = problems_of(path, toys, {"scaled.factr": "3"})
    assert "node 'scaled' (toy.scale) has no input 'factr' (did you mean 'scaled.factor'?" in text
    assert "cannot be overridden" in problems_of(path, toys, {"a.type": "toy.add"})
    assert "--set seed: expects an int, got str 'many'" in problems_of(path, toys, {"seed": "many"})
    assert "--set seed: must be <= 1000, got 5000" in problems_of(path, toys, {"seed": "5000"})
    assert "Input should be less than or equal to 100" in problems_of(path, toys, {"scaled.factor": "500"})


def test_param_without_default_given_by_override(registry: Registry) -> None:
    source = {"version": 1, "params": {"p": {"type": "str"}},
              "nodes": {"t": {"type": "core.text", "value": "$p"}}}
    assert "has no default" in problems_of(source, registry)
    plan = load_plan(source, registry, {"p": "hello"})
    assert plan.nodes["t"].literals == {"value": "hello"}
    assert plan.resolved["params"]["p"] == {"type": "str", "default": "hello"}


def test_param_types(registry: Registry) -> None:
    def source(kind: str, default: Any) -> dict[str, Any]:
        return {"version": 1, "params": {"p": {"type": kind, "default": default}},
                "nodes": {"j": {"type": "core.join_text", "parts": ["$p"]}}}

    assert load_plan(source("str", "x"), registry).params == {"p": "x"}
    assert "expects a float" in problems_of(source("float", "x"), registry)
    assert "expects a bool" in problems_of(source("bool", 1), registry)
    assert "expects a path" in problems_of(source("path", ""), registry)
    assert "expects a list" in problems_of(source("list", "x"), registry)
    assert "expects an int, got bool True" in problems_of(source("int", True), registry)
    listed = {"version": 1, "params": {"p": {"type": "list", "default": ["a", "b"]}},
              "nodes": {"j": {"type": "core.join_text", "parts": "$p"}}}
    assert load_plan(listed, registry).nodes["j"].literals["parts"] == ["a", "b"]


def test_resolved_round_trips_as_json(toys: Registry) -> None:
    plan = load_plan(GRAPHS_OK / "toy_chain.yaml", toys, {"seed": "3", "label": "@home {}"})
    data = json.loads(json.dumps(plan.resolved))
    assert data["params"]["seed"]["default"] == 3
    assert data["nodes"]["scaled"]["factor"] == "$seed"
    assert data["nodes"]["a"] == {"type": "toy.number", "value": 2}
    again = load_plan(data, toys, file=Path("image.png"))
    assert again.params == plan.params
    for node_id, node in plan.nodes.items():
        assert again.nodes[node_id].literals == node.literals
        assert again.nodes[node_id].links == node.links
    assert again.nodes["text"].literals["template"] == "@home {}"
    assert again.file == Path("image.png")
    assert again.resolved == plan.resolved


def test_resolved_writes_defaults_and_drops_params_no_longer_read(toys: Registry) -> None:
    plan = load_plan(GRAPHS_OK / "toy_chain.yaml", toys, {"scaled.factor": 5})
    assert "seed" not in plan.resolved["params"]
    assert plan.resolved["nodes"]["scaled"]["factor"] == 5
    plan = load_plan(doc(n={"type": "toy.number", "value": 1}, s={"type": "toy.scale", "x": "@n"}), toys)
    assert plan.resolved["nodes"]["s"] == {"type": "toy.scale", "x": "@n", "factor": 2}


def test_dict_source_is_copied_not_changed(toys: Registry) -> None:
    source = doc(n={"type": "toy.number", "value": 1})
    before = copy.deepcopy(source)
    plan = load_plan(source, toys, {"n.value": "4"})
    assert source == before
    assert plan.nodes["n"].literals == {"value": 4.0}


def test_dict_source_with_non_plain_data(toys: Registry) -> None:
    text = problems_of({"version": 1, "nodes": {"n": {"type": "toy.number", "value": object()}}}, toys)
    assert "'nodes.n.value' holds a object, not plain data" in text
    plan = load_plan({"version": 1, "nodes": {"s": {"type": "toy.sum", "values": (1, 2)}}}, toys)
    assert plan.resolved["nodes"]["s"]["values"] == [1, 2]


def test_metadata_is_kept(toys: Registry) -> None:
    source = doc(n={"type": "toy.number", "value": 1}) | {"metadata": {"torch": "2.13"}}
    plan = load_plan(source, toys)
    assert plan.extra == {"metadata": {"torch": "2.13"}}
    assert plan.resolved["metadata"] == {"torch": "2.13"}


def test_cycle_names_its_nodes_and_leaves_others_out(toys: Registry) -> None:
    text = problems_of(doc(
        start={"type": "toy.number", "value": 1},
        x={"type": "toy.add", "a": "@start", "b": "@z"},
        y={"type": "toy.add", "a": "@x"},
        z={"type": "toy.add", "a": "@y"},
        p={"type": "toy.add", "a": "@q"},
        q={"type": "toy.add", "a": "@p"},
    ), toys)
    assert "the graph has a cycle: x -> y -> z -> x" in text
    assert "the graph has a cycle: p -> q -> p" in text
    assert "start" not in text


def test_missing_file_and_folder(toys: Registry, tmp_path: Path) -> None:
    assert "graph file not found" in problems_of(tmp_path / "nope.yaml", toys)
    assert "this is a folder" in problems_of(tmp_path, toys)


def test_closest_names(toys: Registry) -> None:
    text = problems_of(doc(n={"type": "toy.numbr", "value": 1}), toys)
    assert "unknown node type 'toy.numbr' (did you mean 'toy.number'" in text
    text = problems_of(doc(n={"type": "toy.split", "x": 1}, s={"type": "toy.add", "a": "@n.hihg"}), toys)
    assert "did you mean '@n.high'? outputs: low, high" in text


def test_null_for_a_path_input_is_refused(toys: Registry) -> None:
    # toy.write_text's `path` has a default; null is not a path, so it is refused with pydantic's words
    text = problems_of(doc(w={"type": "toy.write_text", "text": "x", "path": None}), toys)
    assert "node 'w', field 'path'" in text


def test_output_path_checks(toys: Registry) -> None:
    for bad in ("../x.txt", "/etc/passwd", "~/x", "C:/x.txt", "a/../../x"):
        text = problems_of(doc(w={"type": "toy.write_text", "text": "x", "path": bad}), toys)
        assert "must be a relative path inside the output folder" in text, bad
    plan = load_plan(doc(w={"type": "toy.write_text", "text": "x", "path": "sub/out.txt"}), toys)
    assert plan.nodes["w"].literals["path"] == "sub/out.txt"
