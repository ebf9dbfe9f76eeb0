"""Names in requests resolved inside one served folder, or refused: no `..`, no absolute paths, no
symlink that leads out, no NUL. Every route that reads or writes a file goes through `inside`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from nodegraph.document.plan import Plan, file_literals
from nodegraph.errors import GraphError, Problem


class OutsideFolder(ValueError):
    """A requested name that would leave its folder (the route answers 400 or 404)."""


def clean_relative(name: str, schemes: bool = False) -> PurePosixPath:
    """`name` as a relative POSIX path with no `..`, `~`, drive or NUL; raises `OutsideFolder`.

    `schemes`: allow a pack's `scheme:NAME` reference (`builtin:tinyworld`), never a drive letter.
    """
    text = name.replace("\\", "/")
    rel = PurePosixPath(text)
    head = rel.parts[0] if rel.parts else ""
    drive_like = ":" in head and (not schemes or len(head.split(":", 1)[0]) < 2)
    if (not text or "\x00" in text or rel.is_absolute() or text.startswith("~") or ".." in rel.parts
            or drive_like):
        raise OutsideFolder(f"'{name}' must be a relative name inside the folder")
    return rel


def inside(root: Path, name: str) -> Path:
    """The path of `name` in `root`, its symlinks resolved, refused when it leaves `root`."""
    rel = clean_relative(name)
    base = Path(os.path.realpath(root))
    path = Path(os.path.realpath(base / rel))
    if path != base and base not in path.parents:
        raise OutsideFolder(f"'{name}' leads out of the folder")
    return path


def check_file_inputs(plan: Plan, roots: list[Path]) -> None:
    """Refuse a submitted graph that reads files outside the served folders.

    Every file literal (input files, model references) must be a relative name without `..`; where it
    names a file in the graph's folder, that file (symlinks resolved) must stay inside one of `roots`
    (graphs, inputs and models folders). Names that only a pack resolves (`builtin:NAME`, a bare model
    name searched in the models folders) pass: the pack looks only in its own and the served folders.
    """
    problems: list[Problem] = []
    base = plan.file.parent if plan.file else None
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    for lit in file_literals(plan):
        line = plan.nodes[lit.node].line
        try:
            rel = clean_relative(lit.value, schemes=True)
        except OutsideFolder:
            problems.append(Problem(f"'{lit.value}' is outside the served folders: a graph sent to the "
                                    "server reads only relative names (inputs folder, graphs folder, "
                                    "models folders)", file=str(plan.file) if plan.file else None,
                                    line=line, node=lit.node, field=lit.field))
            continue
        if base is None:
            continue
        candidate = base / rel
        if not candidate.exists():
            continue
        real = Path(os.path.realpath(candidate))
        if not any(real == r or r in real.parents for r in real_roots):
            problems.append(Problem(f"'{lit.value}' leads out of the served folders (a symlink?)",
                                    file=str(plan.file) if plan.file else None, line=line,
                                    node=lit.node, field=lit.field))
    if problems:
        raise GraphError(problems)
