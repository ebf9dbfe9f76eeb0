"""The `diffusion` pack: models, text encoders, schedulers, the sampler, VAE, latents."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_register(registry: object) -> None:
    from nodegraph_diffusion import (
        embedding_nodes,
        flux_fill,
        flux_kontext,
        flux_nodes,
        inpaint_nodes,
        instruct_pix2pix,
        k_sampler_nodes,
        latent_nodes,
        model_nodes,
        sampler_nodes,
        schedulers,
        sd_upscale,
        skip_layers,
        text_encoder_files,
        text_nodes,
        transformer_nodes,
        vae_nodes,
    )

    for module in (model_nodes, schedulers, text_nodes, latent_nodes, sampler_nodes, k_sampler_nodes,
                   vae_nodes, inpaint_nodes, flux_nodes, flux_fill, flux_kontext,
                   embedding_nodes, skip_layers, instruct_pix2pix, sd_upscale, transformer_nodes,
                   text_encoder_files):
        registry.add_module(module)  # type: ignore[attr-defined]
