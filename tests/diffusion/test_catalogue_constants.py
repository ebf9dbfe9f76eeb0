"""The light node catalogues repeat a few constants of the heavy modules they must not import."""

from __future__ import annotations

from nodegraph_diffusion import latent_nodes, sampling, vae_nodes


def test_vae_scale_matches_the_sampling_module() -> None:
    assert latent_nodes.VAE_SCALE == vae_nodes.VAE_SCALE == sampling.VAE_SCALE
