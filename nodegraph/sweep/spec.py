"""Sweep axes and their values: `--sweep seed=1..16`, `--sweep lora_weight=0,0.5,1`, `prompt=@prompts.txt`.

Values stay text, exactly as `--set` would receive them, so the document layer reads and validates
each one the same way (`seed=3` is the int 3; a `str` param keeps the text as written). Ranges are
inclusive: `1..4` is 1,2,3,4; `0..1:0.25` steps by 0.25 (decimal arithmetic, so no 0.30000000000000004).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from nodegraph.errors import NodegraphError

MAX_RANGE = 100_000  # values one range may produce; a typo like 1..1e9 should fail fast, not fill memory


@dataclass(frozen=True)
class Axis:
    """One swept target (a param name or `node.input`) and the texts it takes, in order."""

    target: str
    values: tuple[str, ...]


def parse_axis(item: str, base_dir: Path | None = None) -> Axis:
    """Parse one `--sweep target=values` item; `@file` reads one value per non-empty line."""
    target, eq, spec = item.partition("=")
    target = target.strip()
    if not eq or not target:
        raise NodegraphError(f"--sweep '{item}' must look like name=values (1..8, 0,0.5,1 or @file.txt)")
    if spec.startswith("@"):
        values = _read_values_file(target, spec[1:], base_dir)
    elif ".." in spec and "," not in spec:
        values = _expand_range(target, spec)
    else:
        values = [v.strip() for v in spec.split(",")]
    if not values or any(v == "" for v in values):
        raise NodegraphError(f"--sweep '{item}': '{target}' needs at least one value and no empty ones")
    return Axis(target, tuple(values))


def parse_axes(items: list[str], base_dir: Path | None = None) -> list[Axis]:
    """Parse every `--sweep` item; a target swept twice is an error (say both values in one list)."""
    axes = [parse_axis(item, base_dir) for item in items]
    seen: set[str] = set()
    for axis in axes:
        if axis.target in seen:
            raise NodegraphError(f"--sweep target '{axis.target}' is given twice; list all its values in one "
                                 "--sweep")
        seen.add(axis.target)
    return axes


def _read_values_file(target: str, name: str, base_dir: Path | None) -> list[str]:
    path = Path(name).expanduser()
    if not path.is_absolute() and not path.exists() and base_dir is not None:
        path = base_dir / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NodegraphError(f"--sweep {target}=@{name}: cannot read the values file ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _number(target: str, text: str, spec: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise NodegraphError(f"--sweep {target}={spec}: '{text}' is not a number (ranges look like 1..8 or "
                             "0..1:0.25)") from None
    if not value.is_finite():
        raise NodegraphError(f"--sweep {target}={spec}: '{text}' is not a finite number")
    return value


def _expand_range(target: str, spec: str) -> list[str]:
    """`a..b` or `a..b:step`, inclusive of b when the steps land on it; descending when step < 0."""
    bounds, _, step_text = spec.partition(":")
    start_text, _, stop_text = bounds.partition("..")
    start, stop = _number(target, start_text, spec), _number(target, stop_text, spec)
    step = _number(target, step_text, spec) if step_text else Decimal(1 if stop >= start else -1)
    if step == 0 or (stop - start) * step < 0:
        raise NodegraphError(f"--sweep {target}={spec}: the step {step} never reaches {stop} from {start}")
    count = int((stop - start) / step) + 1
    if count > MAX_RANGE:
        raise NodegraphError(f"--sweep {target}={spec} gives {count} values (at most {MAX_RANGE})")
    return [_text(start + i * step) for i in range(count)]


def _text(value: Decimal) -> str:
    """Integers without a decimal point (so an int param reads them), others in plain notation."""
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")
