"""train_ip2p's pieces: the edit-pair generator, the widened UNet's zero start, the dropout mix; and,
once builtin:tinyworld-ip2p is the trained one (a `training.json` marker), that it edits held-out scenes.

The pair tests are pure numpy (milliseconds); the widened UNet is tinyworld's own (3 MB, no hub).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from nodegraph_diffusion.paths import BUILTIN_DIR

from training.train_ip2p import DROP, EDITS, dropped, edit_pairs, widened_unet
from training.world import COLORS, SHAPES, _too_close, draw_scene, held_out


def test_pairs_change_exactly_the_named_attribute() -> None:
    pairs = edit_pairs(21, 60)
    assert [p.edit for p in pairs[:6]] == list(EDITS) * 2
    for p in pairs:
        src, dst = p.source, p.edited
        assert src.obj is not None and dst.obj is not None
        if p.edit == "color":
            assert p.instruction == f"make it a {p.target} {src.obj.shape}"
            assert dst.obj == dataclasses.replace(src.obj, color=p.target)
            assert dst.background == src.background
            assert p.target != src.obj.color and not _too_close(p.target, src.background)
        elif p.edit == "shape":
            assert p.instruction == f"turn the {src.obj.shape} into a {p.target}"
            assert dst.obj == dataclasses.replace(src.obj, shape=p.target) and p.target in SHAPES
            assert p.target != src.obj.shape and dst.background == src.background
        else:
            assert p.instruction == f"give it a {p.target} background" and p.target in COLORS
            assert dst.obj == src.obj and dst.background == p.target != src.background
            assert not _too_close(p.target, src.obj.color)
        assert dst.caption.endswith(f"{dst.background} background") and dst.obj.color in dst.caption
        assert not np.array_equal(draw_scene(src), draw_scene(dst))


def test_training_pairs_avoid_held_out_combinations_and_eval_pairs_use_them() -> None:
    train = edit_pairs(21, 200)
    assert not any(held_out(p.source) or held_out(p.edited) for p in train)
    evaluation = edit_pairs(9001, 30, held=True)
    assert all(held_out(p.source) for p in evaluation)
    assert edit_pairs(21, 30) == train[:30]  # deterministic from the seed


def test_widened_unet_starts_as_tinyworld_and_its_picture_channels_act_once_perturbed() -> None:
    from diffusers import UNet2DConditionModel

    base = BUILTIN_DIR / "tinyworld"
    plain = UNet2DConditionModel.from_pretrained(base, subfolder="unet", local_files_only=True).eval()
    wide = widened_unet(base).eval()
    assert wide.config.in_channels == 8 and wide.conv_in.weight[:, 4:].abs().max().item() == 0.0
    gen = torch.Generator().manual_seed(0)
    x, picture = torch.randn(2, 4, 8, 8, generator=gen), 5 * torch.randn(2, 4, 8, 8, generator=gen)
    states, t = torch.randn(2, 77, 32, generator=gen), torch.tensor([10, 500])
    with torch.no_grad():
        ref = plain(x, t, encoder_hidden_states=states).sample
        got = wide(torch.cat([x, picture], 1), t, encoder_hidden_states=states).sample
        assert (got - ref).abs().max().item() == 0.0  # zero weights: the picture adds exact zeros
        wide.conv_in.weight[:, 4:].normal_(0, 0.05, generator=gen)
        moved = wide(torch.cat([x, picture], 1), t, encoder_hidden_states=states).sample
    assert (moved - ref).abs().max().item() > 1e-2


def test_dropout_mix_is_five_percent_each() -> None:
    n = 20_000
    embeds, pictures, empty = torch.ones(n, 2, 3), torch.ones(n, 4, 1, 1), torch.zeros(2, 3)
    targets = torch.full((n, 4, 1, 1), 7.0)
    e, p, t = dropped(embeds, pictures, targets, empty, np.random.default_rng(0))
    text_gone, picture_gone = e.abs().sum((1, 2)) == 0, p.abs().sum((1, 2, 3)) == 0
    mixes = ((text_gone, ~picture_gone), (~text_gone, picture_gone), (text_gone, picture_gone))
    fractions = [float((a & b).float().mean()) for a, b in mixes]
    assert all(abs(f - DROP) < 0.006 for f in fractions), fractions
    assert embeds.abs().sum() == embeds.numel()  # the inputs are not modified
    assert torch.equal(t, targets)  # the paper's recipe: every row keeps its edited target


def test_without_text_the_target_can_be_the_unchanged_picture() -> None:
    n = 20_000
    embeds, pictures, empty = torch.ones(n, 2, 3), torch.full((n, 4, 1, 1), 2.0), torch.zeros(2, 3)
    targets = torch.full((n, 4, 1, 1), 7.0)
    e, p, t = dropped(embeds, pictures, targets, empty, np.random.default_rng(0), text_drop=0.2, factor=0.5)
    text_gone, picture_gone = e.abs().sum((1, 2)) == 0, p.abs().sum((1, 2, 3)) == 0
    asked_picture = (t == 1.0).flatten(1).all(1)  # 2.0 x the factor
    assert torch.equal(asked_picture, text_gone & ~picture_gone)
    assert abs(float(asked_picture.float().mean()) - 0.2) < 0.01
    assert torch.equal(t[~asked_picture], targets[~asked_picture])


@pytest.mark.slow
@pytest.mark.skipif(not (BUILTIN_DIR / "tinyworld-ip2p" / "training.json").exists(),
                    reason="builtin:tinyworld-ip2p is the random stand-in (no training.json marker)")
def test_shipped_ip2p_edits_held_out_scenes() -> None:
    from training.eval_ip2p import EVAL_SEED, edit_images, table

    pairs = edit_pairs(EVAL_SEED, 9, held=True)
    scores = table(edit_images(BUILTIN_DIR / "tinyworld-ip2p", pairs), pairs)["all"]
    assert scores["success"] >= FLOOR and scores["both"] >= FLOOR, scores


# measured on these 9 pairs: success 1.0, preserved 0.889, both 0.889 (90 pairs: 0.989 / 0.867 / 0.856)
FLOOR = 0.75
