"""Expand sweep axes into variants (grid: every combination; zip: the i-th value of each axis), check
every variant as a graph before anything runs, and give each a content-derived key and name.

A variant's key hashes the cache keys of all its nodes computed with a fixed nonce: node types and
versions, literal inputs and the fingerprints of the files they read. Two variants that would make
the same outputs share a key; editing an input file changes it, so `--resume` re-runs that variant.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodegraph.document.plan import Plan
from nodegraph.errors import GraphError, NodegraphError, Problem
from nodegraph.runtime.cache import canonical_json, node_key
from nodegraph.runtime.executor import execution_order
from nodegraph.sweep.spec import Axis

_SLUG_RE = re.compile(r"(?:[^A-Za-z0-9.-]|\.{2,})+")
_SLUG_MAX = 60


@dataclass(frozen=True)
class Variant:
    """One run of the graph: its position, the `--set`-style overrides it applies, and its key."""

    index: int
    overrides: dict[str, str]  # target -> value text, in axis order
    key: str  # content-derived (see module docstring)

    @property
    def name(self) -> str:
        """Folder name of its outputs: the swept values (readable) and the key (unique, content-derived)."""
        parts = [f"{target.rsplit('.', 1)[-1]}-{value}" for target, value in self.overrides.items()]
        slug = _SLUG_RE.sub("_", "_".join(parts)).strip("._-")[:_SLUG_MAX] or "variant"
        return f"{slug}-{self.key[:12]}"


def combinations(axes: list[Axis], zipped: bool) -> list[dict[str, str]]:
    """The overrides of each variant, in order: grid = first axis outermost; zip = axes side by side."""
    if not axes:
        return [{}]
    if zipped:
        lengths = {axis.target: len(axis.values) for axis in axes}
        if len(set(lengths.values())) > 1:
            sizes = ", ".join(f"{t} has {n}" for t, n in lengths.items())
            raise NodegraphError(f"--zip needs the same number of values on every axis ({sizes}); use --grid "
                                 "for every combination")
        rows = zip(*(axis.values for axis in axes), strict=True)
    else:
        rows = itertools.product(*(axis.values for axis in axes))
    return [{axis.target: value for axis, value in zip(axes, row, strict=True)} for row in rows]


def plan_key(plan: Plan, runtime: Mapping[str, str] | None = None) -> str:
    """The content-derived key of what a plan would produce (stable across runs and processes);
    `runtime` (requested device, dtype) joins it, so a variant made in fp16 is not taken for fp32."""
    base_dir = plan.file.parent if plan.file else Path.cwd()
    keys: dict[str, str] = {}
    digest = hashlib.sha256(canonical_json(dict(runtime or {})).encode())
    for node_id in execution_order(plan):
        keys[node_id] = node_key(plan.nodes[node_id], keys, base_dir, "sweep")
        digest.update(f"{node_id}={keys[node_id]};".encode())
    return digest.hexdigest()


def build_variants(load: Callable[[Mapping[str, Any]], Plan], axes: list[Axis], zipped: bool,
                   runtime: Mapping[str, str] | None = None) -> list[Variant]:
    """Load every variant with its overrides (`load` is `Engine.load` bound to the graph); collect all
    problems, each naming the variant's values, and raise them together before anything runs."""
    problems: list[Problem] = []
    variants: list[Variant] = []
    first_problem_of: dict[str, str] = {}
    for index, overrides in enumerate(combinations(axes, zipped)):
        try:
            plan = load(overrides)
        except GraphError as exc:
            for problem in exc.problems:
                text = str(problem)
                if text in first_problem_of:
                    continue  # the same bad target in every variant: say it once
                first_problem_of[text] = text
                problems.append(_with_variant(problem, overrides))
            continue
        variants.append(Variant(index, overrides, plan_key(plan, runtime)))
    if problems:
        raise GraphError(problems)
    return variants


def _with_variant(problem: Problem, overrides: Mapping[str, str]) -> Problem:
    values = ", ".join(f"{t}={v}" for t, v in overrides.items())
    message = problem.message.replace("--set target", "--sweep target")
    if values:
        message = f"{message} (sweep variant {values})"
    return Problem(message, file=problem.file, line=problem.line,
                   node=problem.node, field=problem.field)
