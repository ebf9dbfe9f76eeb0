"""Ranking a sweep's variants by the figure one node of each run reported (`--rank-by NODE --keep K`).

A node reports a figure with `ctx.score(value)` (clip.save_scores reports the CLIP score of the best
image it kept); each variant's manifest line keeps it under the node's id. Ranking reads only the
manifest, so it also ranks variants finished by an earlier run (`--resume`) and never re-runs one:
    ranking.json              every variant that reported, best first: rank, variant, params, score, image
    best_contact_sheet.png    the first K of them, captioned with their values, rank and score
Higher is better (a similarity); ties keep the sweep's order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from nodegraph.errors import NodegraphError
from nodegraph.sweep.contact import first_image, render_sheet
from nodegraph.sweep.outputs import SweepFolder, write_atomic
from nodegraph.sweep.variants import Variant

RANKING = "ranking.json"
BEST_SHEET = "best_contact_sheet.png"


@dataclass(frozen=True)
class RankBy:
    """Which node's score orders the variants, and how many the best sheet shows."""

    node: str
    keep: int = 4


@dataclass(frozen=True)
class Ranking:
    """Where the ranking went, and the rows (best first)."""

    file: Path
    sheet: Path | None
    rows: list[dict[str, Any]]
    unscored: int  # finished variants whose run reported no score from the node


def check_rank_by(rank: RankBy, node_ids: list[str], graph: Path) -> None:
    """A clear error before anything runs when the node is not in the graph (`--keep` is checked as the
    CLI parses it)."""
    if rank.node not in node_ids:
        raise NodegraphError(f"--rank-by '{rank.node}' is no node of {graph.name}; its nodes are "
                             f"{', '.join(node_ids)} (rank by one that reports a score, e.g. "
                             "clip.save_scores)")


def rank_variants(variants: list[Variant], folder: SweepFolder, rank: RankBy) -> Ranking:
    """Order the finished variants by their score from `rank.node`; write ranking.json and the sheet."""
    scored: list[tuple[float, Variant, Path | None]] = []
    unscored = 0
    for variant, entry in zip(variants, folder.entries_for(variants), strict=True):
        if entry is None:
            continue
        value = (entry.get("scores") or {}).get(rank.node)
        if not isinstance(value, (int, float)):
            unscored += 1
            continue
        scored.append((float(value), variant, first_image(entry, folder.out_dir)))
    scored.sort(key=lambda row: -row[0])  # stable: ties keep the sweep's order
    rows = [{"rank": n + 1, "variant": variant.name, "params": dict(variant.overrides), "score": value,
             "image": image.relative_to(folder.out_dir).as_posix() if image else None}
            for n, (value, variant, image) in enumerate(scored)]
    file = folder.target(PurePosixPath(RANKING))
    write_atomic(file, (json.dumps({"rank_by": rank.node, "variants": rows}, indent=1) + "\n").encode())
    best = scored[:rank.keep]
    captioned = [replace(v, overrides={**v.overrides, "rank": str(n + 1), "score": f"{value:.4f}"})
                 for n, (value, v, _) in enumerate(best)]
    data = render_sheet([], True, captioned, [image for *_, image in best])
    sheet = None
    if data is not None:
        sheet = folder.target(PurePosixPath(BEST_SHEET))
        write_atomic(sheet, data)
    return Ranking(file, sheet, rows, unscored)
