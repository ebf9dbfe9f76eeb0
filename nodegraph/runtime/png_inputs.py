"""The input files of a run, recorded in its PNGs and found again when `nodegraph run image.png` re-runs it.

A graph that reads files (an image for img2img, a pose file) names them relative to the graph file.
Re-running from a PNG elsewhere would look for them relative to the PNG, and fail. So each saved
PNG's metadata lists every file a node read: where it was (absolute path at save time), what the graph
wrote (the param or node field it came from) and its content fingerprint. On re-run each is looked up
where it was, next to the PNG and in the current folder, and only a file with the same fingerprint
is taken: a different file of the same name would silently give another picture.

Files up to `EMBED_LIMIT` bytes are embedded (base64) too, so a PNG mailed to someone else re-runs
without them: the shipped inputs are 1-10 KB (a 64x64 scene, pose JSON files), so every demo PNG
re-runs anywhere for at most ~85 KB more metadata, while a photo for a real img2img (hundreds of KB) is
left out and looked up. An embedded file is written once, by fingerprint, under the user's cache
folder (`<cache>/inputs/<sha256>/<name>`), never next to the user's files.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodegraph.document.plan import Plan, file_literals
from nodegraph.errors import GraphError, Problem
from nodegraph.ports import InputFile, fingerprint_file

EMBED_LIMIT = 64 * 1024  # bytes; larger input files are only looked up, not embedded
_PARAM_REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def _reads_a_file(port_type: Any) -> bool:
    return isinstance(port_type, type) and issubclass(port_type, InputFile)


def record_inputs(plan: Plan) -> list[dict[str, Any]]:
    """One record per input file a node of `plan` reads: node, field, param (when the value came from
    `$param`), the value as written, its absolute path, its fingerprint, and its bytes when small."""
    nodes = plan.resolved.get("nodes") if isinstance(plan.resolved, dict) else None
    records = []
    for lit in file_literals(plan):
        doc = nodes.get(lit.node) if isinstance(nodes, dict) else None
        written = doc.get(lit.field) if isinstance(doc, dict) else None
        scalar = isinstance(plan.nodes[lit.node].literals[lit.field], str)
        if not _reads_a_file(lit.port_type) or not scalar:
            continue  # model paths are found by the model search; list inputs are not recorded
        path = lit.path
        try:
            if not path.is_file():
                continue  # the node reports a missing file with its own message
            size = path.stat().st_size
            record: dict[str, Any] = {"node": lit.node, "field": lit.field, "value": lit.value,
                                      "path": str(path.resolve()), "fingerprint": fingerprint_file(path)}
            if size <= EMBED_LIMIT:
                record["data"] = base64.b64encode(path.read_bytes()).decode("ascii")
        except OSError:
            continue
        ref = _PARAM_REF.fullmatch(written) if isinstance(written, str) else None
        if ref:
            record["param"] = ref.group(1)
        records.append(record)
    return records


def _candidates(record: dict[str, Any], png: Path) -> list[Path]:
    value = Path(str(record.get("value", "")))
    names = [value, Path(value.name)] if value.name else [value]
    found = [Path(str(record["path"]))] if record.get("path") else []
    for folder in (png.resolve().parent, Path.cwd()):
        found += [folder / n for n in names]
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def _matches(path: Path, fingerprint: str) -> bool:
    try:
        return path.is_file() and fingerprint_file(path) == fingerprint
    except OSError:
        return False


def _unpack(record: dict[str, Any], cache_dir: Path) -> Path | None:
    """The embedded bytes as a file under `cache_dir` (written once), or None if absent or not matching."""
    try:
        data = base64.b64decode(str(record.get("data", "")), validate=True)
    except ValueError:
        return None
    fingerprint = str(record["fingerprint"])
    if not data or hashlib.sha256(data).hexdigest() != fingerprint:
        return None
    name = Path(str(record.get("value", ""))).name or "input"
    target = cache_dir / "inputs" / fingerprint / name
    if _matches(target, fingerprint):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{name}.{os.getpid()}.part")
        part.write_bytes(data)
        os.replace(part, target)
    except OSError:
        return None
    return target


def locate_inputs(records: list[Any], png: Path, overrides: Mapping[str, Any] | None,
                  cache_dir: Path) -> dict[str, Any]:
    """Overrides pointing each recorded input at a file with its fingerprint (the user's own
    overrides win); `GraphError` naming every input found nowhere, where we looked and the `--set`."""
    result = dict(overrides or {})
    problems = []
    for record in records:
        if not isinstance(record, dict) or not record.get("fingerprint") or not record.get("node"):
            continue
        key = str(record.get("param") or f"{record['node']}.{record['field']}")
        if key in result:
            continue
        looked = _candidates(record, png)
        found = next((p for p in looked if _matches(p, str(record["fingerprint"]))), None)
        if found is None and record.get("data"):
            found = _unpack(record, cache_dir)
        if found is not None:
            result[key] = str(found.resolve())
            continue
        where = ", ".join(f"'{p}'" for p in looked)
        problems.append(Problem(
            f"input file '{record.get('value')}' with fingerprint {record['fingerprint']} was not found "
            f"(looked at {where}); supply it with --set {key}=PATH",
            file=str(png), node=str(record["node"]), field=str(record.get("field"))))
    if problems:
        raise GraphError(problems)
    return result
