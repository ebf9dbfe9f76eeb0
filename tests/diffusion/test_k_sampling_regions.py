"""Regional conditioning and family inputs in the sigma-space sampler, against ComfyUI's formulas
written here with direct UNet calls (calc_cond_batch, get_area_and_mult,
create_cond_with_same_area_if_none)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from k_reference import CFG, MODEL, comfy_noise, load_external, load_unet, random_parts
from nodegraph_diffusion.k_diffusion_import import k_sampling
from nodegraph_diffusion.k_sampler_nodes import k_sampler
from nodegraph_diffusion.latent_nodes import empty_latents
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.types import Conditioning, Latents


@pytest.fixture(scope="module")
def kd() -> Any:
    return k_sampling()


@pytest.fixture(scope="module")
def external() -> Any:
    return load_external()


@pytest.fixture(scope="module")
def unet(tiny_dir: Path) -> Any:
    return load_unet(tiny_dir)


@pytest.fixture
def parts(ctx: Any) -> tuple[Any, Any, Any]:
    return random_parts(ctx)


def feather(
    height: int, width: int, box: tuple[int, int, int, int], full: tuple[int, int], strength: float
) -> torch.Tensor:
    """ComfyUI's `get_area_and_mult` weight of an area (no mask): strength, fading over
    min(8, size // 4) cells on the sides that do not touch the image edge."""
    mult = torch.ones(1, 4, height, width) * strength
    h, w, y, x = box
    for dim, (size, offset, limit) in enumerate(((h, y, full[0]), (w, x, full[1]))):
        rr = min(8, size // 4)
        for t in range(rr):
            f = (1.0 / rr) * (t + 1)
            if offset != 0:
                mult.narrow(dim + 2, t, 1).mul_(f)
            if size + offset < limit:
                mult.narrow(dim + 2, size - 1 - t, 1).mul_(f)
    return mult


def test_regional_conditioning_follows_comfyuis_calc_cond_batch(ctx, parts, kd, external, unet) -> None:
    """positive = combine(set_area(A, 96x80 px at (16, 32), strength 0.8), B), negative = N on a 128 px
    image (16x16 latent cells). ComfyUI adds N's twin with A's area and strength (create_cond_with_same_
    area_if_none), runs [N twin, A] on the crop and [N, B] on the whole latent, sums weighted outputs,
    divides by the summed weights, then CFG."""
    from nodegraph_diffusion.k_sampler_nodes import combine, set_area

    model, a, n = parts
    b = Conditioning(torch.randn((1, 77, 32), generator=torch.Generator().manual_seed(7)))
    positive = combine(
        first=set_area(conditioning=a, width=96, height=80, x=16, y=32, strength=0.8), second=b
    )
    box, full = (10, 12, 4, 2), (16, 16)
    spec = k_sampler(model_scheduler=model.scheduler, sampler="euler", scheduler="karras")
    got = sample(
        ctx,
        unet=model.unet,
        scheduler=spec,
        positive=positive,
        negative=n,
        steps=2,
        cfg=CFG,
        seed=3,
        latents=empty_latents(width=128, height=128),
    ).samples

    def denoise(x: torch.Tensor, sigma: torch.Tensor, embeds: list[torch.Tensor]) -> list[torch.Tensor]:
        xx, ss = torch.cat([x] * len(embeds)), torch.cat([sigma] * len(embeds))
        s = ss.view(-1, 1, 1, 1)
        eps = unet(
            xx / (s**2 + 1.0) ** 0.5,
            MODEL.timestep(ss).float(),
            encoder_hidden_states=torch.cat(embeds),
            return_dict=False,
        )[0]
        return list((xx - eps.float() * s).chunk(len(embeds)))

    def model_fn(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        h, w, y, xo = box
        crop = x[:, :, y : y + h, xo : xo + w]
        n_twin, a_out = denoise(crop, sigma, [n.embeds, a.embeds])
        n_full, b_out = denoise(x, sigma, [n.embeds, b.embeds])
        mult = feather(h, w, box, full, 0.8)
        outs, counts = (
            [torch.zeros_like(x), torch.zeros_like(x)],
            [torch.ones_like(x) * 1e-37 for _ in range(2)],
        )
        for side, out, m in ((1, n_twin, mult), (0, a_out, mult)):
            outs[side][:, :, y : y + h, xo : xo + w] += out * m
            counts[side][:, :, y : y + h, xo : xo + w] += m
        ones = torch.ones_like(x)
        for side, out in ((1, n_full), (0, b_out)):
            outs[side] += out * ones
            counts[side] += ones
        cond, uncond = outs[0] / counts[0], outs[1] / counts[1]
        return uncond + (cond - uncond) * CFG

    sigmas = kd.get_sigmas_karras(2, MODEL.sigma_min, MODEL.sigma_max)
    x = comfy_noise(3, (1, 4, 16, 16)) * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    with torch.no_grad():
        want = kd.sample_euler(model_fn, x, sigmas, disable=True)
    assert float((got - want).abs().max()) == 0.0
    # one step from the same noise: outside the area only B and N act, so the result is the plain one there
    one = {
        "unet": model.unet,
        "scheduler": spec,
        "negative": n,
        "steps": 1,
        "cfg": CFG,
        "seed": 3,
        "latents": empty_latents(width=128, height=128),
    }
    diff = sample(ctx, positive=positive, **one).samples - sample(ctx, positive=b, **one).samples
    assert float(diff[:, :, 5:13, 3:13].abs().max()) > 1e-3
    assert float(diff[:, :, :, 14:].abs().max()) == 0.0 and float(diff[:, :, :4].abs().max()) == 0.0


def test_zero_out_and_strength_nodes(parts) -> None:
    from nodegraph_diffusion.k_sampler_nodes import set_area, set_area_strength, zero_out

    zeroed = zero_out(conditioning=parts[1])
    assert not zeroed.embeds.any() and zeroed.embeds.shape == parts[1].embeds.shape
    weighted = set_area_strength(
        conditioning=set_area(conditioning=parts[1], width=0.5, height=1.0, x=0.5, percentage=True),
        strength=2.5,
    )
    (entry,) = weighted.entries
    assert entry.strength == 2.5 and entry.area is not None and entry.area.percentage and entry.area.x == 0.5


def test_regional_conditioning_is_refused_by_the_diffusers_loop(ctx, parts) -> None:
    from nodegraph_diffusion.k_sampler_nodes import set_area

    from nodegraph.api import InputError

    model, pos, neg = parts
    with pytest.raises(InputError) as err:
        sample(
            ctx,
            unet=model.unet,
            scheduler=model.scheduler,
            negative=neg,
            steps=2,
            positive=set_area(conditioning=pos, width=32, height=32),
            latents=empty_latents(width=64, height=64),
        )
    assert err.value.field == "positive" and "diffusion.k_sampler" in str(err.value)


def test_sdxl_family_inputs_reach_the_unet(ctx, kd) -> None:
    """On the tiny SDXL the UNet gets the family's added_cond_kwargs (pooled text_embeds, time_ids) in
    every call, batched [uncond, cond] like the embeddings."""
    from diffusers import UNet2DConditionModel
    from nodegraph_diffusion.families import DenoiseRequest, family_named
    from nodegraph_diffusion.loading import own_storage
    from nodegraph_diffusion.paths import BUILTIN_DIR, ModelRef
    from nodegraph_diffusion.text_nodes import encode_text

    model = load_model(ctx, ModelRef("builtin:tinyxl"))
    pos = encode_text(ctx, model.text_encoder, "a big red circle in the center, blue background")
    neg = encode_text(ctx, model.text_encoder, "")
    spec = k_sampler(model_scheduler=model.scheduler, sampler="dpmpp_2m", scheduler="karras")
    got = sample(
        ctx,
        unet=model.unet,
        scheduler=spec,
        positive=pos,
        negative=neg,
        steps=3,
        cfg=CFG,
        seed=8,
        latents=Latents(torch.zeros(1, 4, 8, 8)),
    ).samples

    xl_unet = UNet2DConditionModel.from_pretrained(
        BUILTIN_DIR / "tinyxl" / "unet", local_files_only=True
    ).eval()
    own_storage(xl_unet)
    added = family_named("sdxl").added_cond_kwargs(
        xl_unet, pos, neg, DenoiseRequest(1, True, 64, 64, "cpu", torch.float32)
    )
    assert added is not None
    embeds = torch.cat([neg.embeds, pos.embeds])

    def model_fn(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        xx, ss = torch.cat([x, x]), torch.cat([sigma, sigma])
        s = ss.view(-1, 1, 1, 1)
        eps = xl_unet(
            xx / (s**2 + 1.0) ** 0.5,
            MODEL.timestep(ss).float(),
            encoder_hidden_states=embeds,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
        uncond, cond = (xx - eps.float() * s).chunk(2)
        return uncond + (cond - uncond) * CFG

    sigmas = kd.get_sigmas_karras(3, MODEL.sigma_min, MODEL.sigma_max)
    with torch.no_grad():
        want = kd.sample_dpmpp_2m(
            model_fn, comfy_noise(8) * torch.sqrt(1.0 + sigmas[0] ** 2.0), sigmas, disable=True
        )
    assert float((got - want).abs().max()) == 0.0


def test_the_docs_regional_graph_runs(tmp_path: Path) -> None:
    """docs/comfyui.md's regional graph (the yaml block after 'two prompts, one confined') runs; in one
    step from the same noise its left area changes the left latents only (the right half is exact)."""
    import yaml

    from nodegraph import Engine, RunOptions

    doc = (Path(__file__).resolve().parents[2] / "docs" / "comfyui.md").read_text()
    block = doc.split("two prompts, one confined", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    graph = yaml.safe_load(block)
    engine, runs = Engine(), []
    for positive, steps in (("@both", 20), ("@both", 1), ("@scene", 1)):
        graph["nodes"]["latents"].update(positive=positive, steps=steps)
        options = RunOptions(out_dir=tmp_path / f"{positive[1:]}{steps}", device="cpu", dtype="float32")
        runs.append(engine.run(engine.load(graph, file=tmp_path / "g.yaml"), options=options).outputs)
    assert (
        runs[0]["image"]["out"].pixels.shape == (1, 3, 64, 128)
        and (tmp_path / "both20" / "regional.png").is_file()
    )
    diff = (runs[1]["latents"]["out"].samples - runs[2]["latents"]["out"].samples).abs()
    assert float(diff[..., :8].max()) > 1e-3 and float(diff[..., 8:].max()) == 0.0
