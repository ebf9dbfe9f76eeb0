"""OpenPose parsing (every dialect in tests/fixtures/poses) and ControlNet-style skeleton rendering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from nodegraph_control.pose import BODY25_TO_COCO18, load_pose_file, parse_pose
from nodegraph_control.pose_render import COLORS, LIMBS, Geometry, fit_canvas, render_pose

from nodegraph.api import InputError

LEG_LIMBS = (7, 8, 10, 11)  # hip->knee, knee->ankle on both sides (0-based limb indices)
LEG_JOINTS = (8, 9, 10, 11, 12, 13)


def limb_colour(index: int) -> tuple[int, int, int]:
    return tuple(int(c * 0.6) for c in COLORS[index])  # type: ignore[return-value]


def colours(image: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in px) for px in np.unique(image.reshape(-1, 3), axis=0)}


def pixel(image: np.ndarray, x: float, y: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in image[int(y), int(x)])  # type: ignore[return-value]


# ---------------------------------------------------------------- parsing


def test_coco18_pixel_file(poses):
    frame = load_pose_file(poses / "sdwebui_controlnet_test_pose.json")
    assert (frame.width, frame.height, frame.normalized, frame.canvas_inferred) == (512, 512, False, False)
    person = frame.people[0]
    assert len(person.body) == 18 and sum(p is not None for p in person.body) == 14  # 4 points with c=0
    assert person.body[1] == pytest.approx((303.3188016469506, 272.70982071889466))
    assert len(person.left_hand) == 21 and len(person.right_hand) == 21 and person.face is None


def test_normalised_file_is_scaled_to_its_canvas(poses):
    frame = load_pose_file(poses / "openpose_editor_normalized_missing_legs.json")
    assert frame.normalized and (frame.width, frame.height) == (768, 512)
    nose = frame.people[0].body[0]
    assert nose == pytest.approx((0.4778645833333333 * 768, 0.3359375 * 512))
    assert all(frame.people[0].body[k] is None for k in LEG_JOINTS)


def test_body25_is_mapped_to_coco18_and_canvas_inferred(poses):
    frame = load_pose_file(poses / "openpose_binary_body25_coco192.json")
    assert frame.body_format == "BODY_25" and len(frame.people[0].body) == 18
    assert frame.canvas_inferred and "bounding box" in frame.notes[0]
    raw = json.loads((poses / "openpose_binary_body25_coco192.json").read_text())["people"][0][
        "pose_keypoints_2d"
    ]
    # COCO right_hip (8) is BODY_25 RHip (9), COCO neck (1) is BODY_25 Neck (1); MidHip (8) is dropped.
    # Points are shifted (not scaled) into the bounding-box canvas.
    body = frame.people[0].body
    assert (body[8][0] - body[1][0], body[8][1] - body[1][1]) == pytest.approx(
        (raw[27] - raw[3], raw[28] - raw[4])
    )
    present = [p for p in body if p is not None]
    assert min(p[0] for p in present) > 0 and max(p[0] for p in present) < frame.width
    assert min(p[1] for p in present) > 0 and max(p[1] for p in present) < frame.height


def test_body25_nested_triples(poses):
    frame = load_pose_file(poses / "edge_body25_nested_triples.json")
    assert frame.body_format == "BODY_25" and (frame.width, frame.height) == (720, 1280)
    assert frame.people[0].body[0] == pytest.approx((404.95604679981864, 347.81840201218927))


def test_list_of_frames_with_face_and_hands(poses, tmp_path):
    frame = load_pose_file(poses / "comfyui_pose_keypoint_list_face_hands.json")
    assert len(frame.people[0].face) == 70 and len(frame.people[0].left_hand) == 21
    with pytest.raises(InputError, match="has 1 frame"):
        load_pose_file(poses / "comfyui_pose_keypoint_list_face_hands.json", frame=1)
    data = json.loads((poses / "comfyui_pose_keypoint_list_face_hands.json").read_text())
    second = json.loads((poses / "sdwebui_controlnet_test_pose.json").read_text())
    (tmp_path / "two.json").write_text(json.dumps([data[0], second]))
    assert load_pose_file(tmp_path / "two.json", frame=1).width == 512


def test_threshold_is_configurable(poses):
    low = load_pose_file(poses / "openpose_binary_body25_coco192.json")
    high = load_pose_file(poses / "openpose_binary_body25_coco192.json", threshold=0.8)
    assert sum(p is not None for p in low.people[0].body) == 18
    raw = json.loads((poses / "openpose_binary_body25_coco192.json").read_text())["people"][0][
        "pose_keypoints_2d"
    ]
    kept = [k for k in BODY25_TO_COCO18 if raw[3 * k + 2] >= 0.8]
    assert (
        sum(p is not None for p in high.people[0].body) == len(kept) < 18
    )  # real confidences are fractional


def test_several_people(poses):
    """Our own construction: no attributable public multi-person JSON was found."""
    doc = json.loads((poses / "sdwebui_controlnet_test_pose.json").read_text())
    moved = [v - 200 if i % 3 == 0 and v else v for i, v in enumerate(doc["people"][0]["pose_keypoints_2d"])]
    doc["people"].append({"pose_keypoints_2d": moved})
    frame = parse_pose(doc)
    assert len(frame.people) == 2
    image = render_pose(frame, 512, 512, hands=False)
    fit = fit_canvas(frame, 512, 512)
    for person in frame.people:  # each person's neck->r_shoulder midpoint
        (x1, y1), (x2, y2) = person.body[1], person.body[2]
        assert pixel(image, ((x1 + x2) / 2) * fit.sx + fit.dx, ((y1 + y2) / 2) * fit.sy + fit.dy) == (
            153,
            0,
            0,
        )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("edge_invalid_not_json.json", "is not JSON"),
        ("edge_animal_pose_ap10k.json", "animal pose"),
    ],
)
def test_invalid_fixture_files(poses, name, message):
    with pytest.raises(InputError, match=message) as info:
        load_pose_file(poses / name)
    assert name in str(info.value) and info.value.field == "keypoints"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"foo": 10, "bar": 100}, "no 'people' list"),  # sd-webui-controlnet's own invalid request
        ({"people": [{"pose_keypoints_2d": [1.0] * 57}]}, "has 19 points; expected 18"),
        ({"people": [{"pose_keypoints_2d": [1.0] * 55}]}, "not a multiple of 3"),
        (
            {"people": [{"pose_keypoints_2d": [1.0] * 54, "hand_left_keypoints_2d": [1.0] * 60}]},
            "expected 21",
        ),
        ({"people": [{"pose_keypoints_2d": ["a"] * 54}]}, "numbers only"),
        ({"people": [{"hand_left_keypoints_2d": []}]}, "no 'pose_keypoints_2d'"),
        ({"people": [], "canvas_width": -5, "canvas_height": 10}, "positive numbers"),
        ([], "empty list"),
    ],
)
def test_invalid_documents(tmp_path, doc, message):
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=message) as info:
        load_pose_file(file)
    assert str(file) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_pose_file(tmp_path / "nope.json")


# ---------------------------------------------------------------- rendering


def test_limb_midpoints_and_joints_have_reference_colours(poses):
    frame = load_pose_file(poses / "sdwebui_controlnet_test_pose.json")
    image = render_pose(frame, 512, 512, hands=False, face=False)  # 512 canvas: identity fit
    body = frame.people[0].body
    (x1, y1), (x2, y2) = body[1], body[2]
    assert pixel(image, (x1 + x2) / 2, (y1 + y2) / 2) == (153, 0, 0)  # neck -> right shoulder
    checked = 0
    for index, (a, b) in enumerate(LIMBS):
        if body[a] is None or body[b] is None:
            continue
        mid = ((body[a][0] + body[b][0]) / 2, (body[a][1] + body[b][1]) / 2)
        assert pixel(image, *mid) == limb_colour(index), f"limb {index}"
        checked += 1
    assert checked == 13
    for k in (0, 1, 2, 5, 14, 15, 16, 17):
        assert pixel(image, *body[k]) == COLORS[k], f"joint {k}"
    assert colours(image) <= {(0, 0, 0), *COLORS, *(limb_colour(i) for i in range(17))}


def test_hands_and_face_colours(poses):
    frame = load_pose_file(poses / "comfyui_pose_keypoint_list_face_hands.json")
    image = render_pose(frame, 720, 1280)
    found = colours(image)
    assert (0, 0, 255) in found and (255, 255, 255) in found  # hand joints blue, face dots white
    assert (255, 0, 0) in found  # first hand edge (and the nose)
    without = colours(render_pose(frame, 720, 1280, hands=False, face=False))
    assert (255, 255, 255) not in without


def test_missing_legs_draw_no_leg_colours(poses):
    frame = load_pose_file(poses / "openpose_editor_normalized_missing_legs.json")
    found = colours(render_pose(frame, 512, 512))
    assert not found & {limb_colour(i) for i in LEG_LIMBS}
    assert limb_colour(0) in found
    body_only = colours(render_pose(frame, 512, 512, hands=False))
    assert not body_only & {COLORS[k] for k in LEG_JOINTS}


def test_landscape_canvas_is_letterboxed(poses):
    frame = load_pose_file(poses / "openpose_editor_hand_fixed.json")  # 768 x 512 canvas, pixel coords
    image = render_pose(frame, 512, 512)
    fit = fit_canvas(frame, 512, 512)
    assert fit.sx == fit.sy == pytest.approx(2 / 3) and fit.dx == 0 and fit.dy == pytest.approx(256 / 3)
    assert not image[:80].any() and not image[432:].any()  # black bands above and below
    assert image[90:420].any()
    neck = frame.people[0].body[1]  # (367, 301) in the canvas
    assert pixel(image, neck[0] * 2 / 3, neck[1] * 2 / 3 + 256 / 3) == COLORS[1]


def test_portrait_canvas_is_pillarboxed(poses):
    frame = load_pose_file(poses / "edge_body25_nested_triples.json")  # 720 x 1280
    image = render_pose(frame, 512, 512)
    band = (512 - 720 * 0.4) / 2  # scale 512/1280 = 0.4
    assert not image[:, : int(band) - 6].any() and not image[:, int(512 - band) + 6 :].any()
    assert image.any()


def test_body25_without_canvas_renders(poses):
    frame = load_pose_file(poses / "openpose_binary_body25_apose.json")
    image = render_pose(frame, 256, 256)
    assert limb_colour(0) in colours(image)
    assert len(colours(image)) > 10


def test_geometry_rule():
    assert Geometry.for_size(512, 512) == Geometry(4, 4, 2, 4, 3)
    assert Geometry.for_size(256, 1024) == Geometry(4, 4, 2, 4, 3)
    assert Geometry.for_size(128, 128) == Geometry(2, 2, 1, 2, 2)
    assert Geometry.for_size(64, 64) == Geometry(1, 1, 1, 1, 1)
    assert Geometry.for_size(64, 64, scale=False) == Geometry()


def test_small_render_keeps_exact_colours(poses):
    frame = load_pose_file(poses / "sdwebui_controlnet_test_pose.json")
    image = render_pose(frame, 64, 64, hands=False)
    assert colours(image) <= {(0, 0, 0), *COLORS, *(limb_colour(i) for i in range(17))}
    assert limb_colour(0) in colours(image)


def test_render_pose_node(poses, make_ctx):
    from nodegraph_control.nodes import render_pose as node

    ctx = make_ctx(graph_file=Path(poses) / "graph.yaml")
    out = node(ctx, "sdwebui_controlnet_test_pose.json", width=96, height=64)
    assert tuple(out.pixels.shape) == (1, 3, 64, 96)
    values = set(np.unique(np.round(out.pixels.numpy() * 255)).tolist())
    assert values <= set(range(256)) and 153 in values
    with pytest.raises(InputError, match="animal"):
        node(ctx, "edge_animal_pose_ap10k.json", width=64, height=64)
