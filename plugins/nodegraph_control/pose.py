"""Read OpenPose keypoint JSON in the dialects found in the wild into one normalised form.

Dialects handled (see tests/fixtures/poses/SOURCES.md for real examples of each):
- `people[].pose_keypoints_2d` as flat triples `x0,y0,c0,x1,...` or nested `[[x,y,c], ...]`;
- COCO-18 bodies (18 points) and BODY_25 bodies (25 points, mapped to COCO-18 by dropping MidHip
  and the feet, the mapping given by CMU's documentation);
- pixel or normalised [0, 1] coordinates: a document is normalised when every present point of every
  person has |x| <= 1 and |y| <= 1 (sd-webui-controlnet's `is_normalized` rule);
- `canvas_width`/`canvas_height` present, or absent (CMU OpenPose's own output): then the canvas is the
  bounding box of the present points grown by `BBOX_MARGIN` of its larger side on every side, and the
  result says so (`canvas_inferred`); normalised coordinates without a canvas map onto the output;
- a JSON list of frames (ComfyUI's POSE_KEYPOINT): frame `frame` is taken (0 by default);
- any number of people; optional hands (21 points each) and face (70 points, or DWPose's 68).

Missing points: a point is missing when its confidence is below `threshold` (default
`DEFAULT_THRESHOLD` = 0.05, CMU OpenPose's own `--render_threshold` default; sd-webui's rule
"c < 1 is missing" would drop nearly every point of a real OpenPose output), or when it is at the
origin (0, 0) or has a negative coordinate (the `0,0,0` and `-1` conventions for "not detected").
Missing points are skipped together with the limbs that end at them (RENDERING.md section 5).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodegraph.api import InputError

DEFAULT_THRESHOLD = 0.05
BBOX_MARGIN = 0.1  # of the larger bounding-box side, added on each side when the canvas is absent
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
HAND_POINTS = 21
FACE_POINTS = (70, 68)

Point = tuple[float, float]
Points = tuple[Point | None, ...]


@dataclass(frozen=True)
class Person:
    """One person, coordinates in canvas pixels; `None` marks a missing point."""

    body: Points  # 18 points, COCO-18 order
    left_hand: Points | None = None
    right_hand: Points | None = None
    face: Points | None = None


@dataclass(frozen=True)
class PoseFrame:
    """One frame of people on a canvas of `width` x `height` pixels."""

    width: float
    height: float
    people: tuple[Person, ...]
    normalized: bool = False  # coordinates were given in [0, 1] (already scaled here)
    canvas_inferred: bool = False  # no canvas in the file: bounding box of the points (see module doc)
    body_format: str = "COCO-18"  # what the file held: "COCO-18", "BODY_25" or "mixed"
    notes: tuple[str, ...] = ()


def load_pose_file(path: Path, *, frame: int = 0, threshold: float = DEFAULT_THRESHOLD) -> PoseFrame:
    """Read and parse one OpenPose JSON file; every problem is an InputError naming the file."""
    name = str(path)
    if not path.is_file():
        raise InputError(f"pose file '{name}' does not exist", field="keypoints")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"pose file '{name}' cannot be read as UTF-8 text: {exc}", field="keypoints"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"pose file '{name}' is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "expected an OpenPose keypoint document with a 'people' list",
            field="keypoints",
        ) from exc
    return parse_pose(data, name=name, frame=frame, threshold=threshold)


def parse_pose(
    data: Any, *, name: str = "<pose>", frame: int = 0, threshold: float = DEFAULT_THRESHOLD
) -> PoseFrame:
    """Parse a decoded OpenPose document (or a list of frames) into a `PoseFrame`."""

    def fail(message: str) -> InputError:
        return InputError(f"pose file '{name}': {message}", field="keypoints")

    if isinstance(data, list):
        if not data:
            raise fail("is an empty list of frames")
        if not -len(data) <= frame < len(data):
            raise fail(f"has {len(data)} frame(s); frame {frame} does not exist")
        data = data[frame]
    elif frame not in (0, -1):
        raise fail(f"holds a single frame; frame {frame} does not exist")
    if not isinstance(data, dict):
        raise fail(f"expected a JSON object with a 'people' list, got {type(data).__name__}")
    if "people" not in data:
        if "animals" in data:
            raise fail(
                "is an animal pose file ('animals', e.g. AP-10K); only human OpenPose "
                "keypoints ('people') are supported"
            )
        raise fail(f"has no 'people' list (keys: {sorted(data)[:8]}); not an OpenPose keypoint document")
    people_raw = data["people"]
    if not isinstance(people_raw, list):
        raise fail(f"'people' must be a list, got {type(people_raw).__name__}")

    raw_people = [_read_person(p, i, fail, threshold) for i, p in enumerate(people_raw)]
    formats = {fmt for _, fmt in raw_people}
    body_format = formats.pop() if len(formats) == 1 else ("mixed" if formats else "COCO-18")
    persons = [p for p, _ in raw_people]
    present = [pt for person in persons for pt in _all_points(person)]
    normalized = bool(present) and all(abs(x) <= 1 and abs(y) <= 1 for x, y in present)

    cw, ch = _canvas_size(data, fail)
    notes: list[str] = []
    inferred = False
    if normalized:
        if cw is None or ch is None:
            cw, ch = 1.0, 1.0
            inferred = True
            notes.append("normalised coordinates without canvas size: mapped onto the whole output")
        persons = [_transform(p, cw, ch, 0.0, 0.0) for p in persons]
    elif cw is None or ch is None:
        inferred = True
        if present:
            xs = [x for x, _ in present]
            ys = [y for _, y in present]
            side = max(max(xs) - min(xs), max(ys) - min(ys), 1.0)
            margin = BBOX_MARGIN * side
            x0, y0 = min(xs) - margin, min(ys) - margin
            cw, ch = max(xs) - min(xs) + 2 * margin, max(ys) - min(ys) + 2 * margin
            persons = [_transform(p, 1.0, 1.0, -x0, -y0) for p in persons]
            notes.append(
                f"no canvas size in the file: using the points' bounding box with a "
                f"{BBOX_MARGIN:.0%} margin ({cw:.0f}x{ch:.0f} px)"
            )
        else:
            cw, ch = 512.0, 512.0
            notes.append("no canvas size and no points: empty 512x512 canvas")
    return PoseFrame(
        width=float(cw),
        height=float(ch),
        people=tuple(persons),
        normalized=normalized,
        canvas_inferred=inferred,
        body_format=body_format,
        notes=tuple(notes),
    )


def _canvas_size(data: dict[str, Any], fail: Any) -> tuple[float | None, float | None]:
    w, h = data.get("canvas_width"), data.get("canvas_height")
    if w is None or h is None:
        return None, None
    if not _is_number(w) or not _is_number(h) or w <= 0 or h <= 0:
        raise fail(f"canvas size must be two positive numbers, got canvas_width={w!r}, canvas_height={h!r}")
    return float(w), float(h)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_person(raw: Any, index: int, fail: Any, threshold: float) -> tuple[Person, str]:
    if not isinstance(raw, dict):
        raise fail(f"person {index} must be an object, got {type(raw).__name__}")
    body = _read_points(raw.get("pose_keypoints_2d"), f"person {index} pose_keypoints_2d", fail, threshold)
    if body is None:
        raise fail(f"person {index} has no 'pose_keypoints_2d'")
    if len(body) == 25:
        fmt = "BODY_25"
        body = tuple(body[i] for i in BODY25_TO_COCO18)
    elif len(body) == 18:
        fmt = "COCO-18"
    else:
        raise fail(
            f"person {index} pose_keypoints_2d has {len(body)} points; expected 18 (COCO-18) or 25 (BODY_25)"
        )
    hands = []
    for key in ("hand_left_keypoints_2d", "hand_right_keypoints_2d"):
        pts = _read_points(raw.get(key), f"person {index} {key}", fail, threshold)
        if pts is not None and len(pts) != HAND_POINTS:
            raise fail(f"person {index} {key} has {len(pts)} points; expected {HAND_POINTS}")
        hands.append(pts)
    face = _read_points(raw.get("face_keypoints_2d"), f"person {index} face_keypoints_2d", fail, threshold)
    if face is not None and len(face) not in FACE_POINTS:
        raise fail(f"person {index} face_keypoints_2d has {len(face)} points; expected 70 (or 68)")
    return Person(body=tuple(body), left_hand=hands[0], right_hand=hands[1], face=face), fmt


def _read_points(raw: Any, what: str, fail: Any, threshold: float) -> Points | None:
    """Flat triples or nested [x, y, c] lists -> points (None = missing); None/[] -> None."""
    if raw is None or (isinstance(raw, list) and not raw):
        return None
    if not isinstance(raw, list):
        raise fail(f"{what} must be a list, got {type(raw).__name__}")
    if all(isinstance(v, list) for v in raw):
        triples = []
        for k, item in enumerate(raw):
            if len(item) not in (2, 3) or not all(_is_number(v) for v in item):
                raise fail(f"{what}[{k}] must be [x, y, confidence] numbers, got {item!r:.60}")
            triples.append((item[0], item[1], item[2] if len(item) == 3 else 1.0))
    else:
        if not all(_is_number(v) for v in raw):
            raise fail(f"{what} must hold numbers only (flat x, y, confidence triples)")
        if len(raw) % 3:
            raise fail(f"{what} has {len(raw)} numbers, not a multiple of 3 (x, y, confidence)")
        triples = [(raw[k], raw[k + 1], raw[k + 2]) for k in range(0, len(raw), 3)]
    return tuple(_point(x, y, c, threshold) for x, y, c in triples)


def _point(x: float, y: float, c: float, threshold: float) -> Point | None:
    if c < threshold or x < 0 or y < 0 or (x == 0 and y == 0):
        return None
    return (float(x), float(y))


def _all_points(person: Person) -> list[Point]:
    groups = [person.body, person.left_hand, person.right_hand, person.face]
    return [pt for g in groups if g for pt in g if pt is not None]


def _map(points: Points | None, sx: float, sy: float, dx: float, dy: float) -> Points | None:
    if points is None:
        return None
    return tuple(None if p is None else (p[0] * sx + dx, p[1] * sy + dy) for p in points)


def _transform(person: Person, sx: float, sy: float, dx: float, dy: float) -> Person:
    return Person(
        body=_map(person.body, sx, sy, dx, dy) or (),
        left_hand=_map(person.left_hand, sx, sy, dx, dy),
        right_hand=_map(person.right_hand, sx, sy, dx, dy),
        face=_map(person.face, sx, sy, dx, dy),
    )
