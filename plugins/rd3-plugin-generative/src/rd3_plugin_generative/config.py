"""Settings shared by the generation-based methods: the latent diffusion model they run on.

Light module (pydantic only): the entry points import it when plugins load.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

GENERATOR_FIELDS = (
    "ae_channels",
    "ae_steps",
    "ae_batch_size",
    "ae_lr",
    "ae_kl_weight",
    "unet_channels",
    "unet_steps",
    "unet_batch_size",
    "unet_lr",
    "class_dropout",
    "train_timesteps",
    "generator_seed",
)
"""The fields that define the generator asset (and key its cache); the rest are the method's."""

# Per-resolution presets of the generator: (upper bound on resolution, values). The 28/32 px row
# is sized by a measured trial on 2 CPU cores (see the README); the others are unmeasured
# starting points for GPU users that keep the same shape (f=4 up to 64 px, SD's f=8 above).
PRESETS: tuple[tuple[int, dict], ...] = (
    (32, {"ae_channels": (16, 32, 32), "unet_channels": (32, 64)}),
    (64, {"ae_channels": (32, 64, 64), "unet_channels": (64, 128)}),
    (10**9, {"ae_channels": (64, 128, 256, 256), "unet_channels": (128, 256, 256)}),
)


class GeneratorConfig(BaseModel, frozen=True, extra="forbid"):
    """The generator asset: an AutoencoderKL and a class-conditional UNet2DModel trained from
    scratch on the protocol's real training set (unless `model_path` names real weights)."""

    model_path: str | None = Field(
        None,
        description="a local diffusers folder with real weights (D4M: Stable Diffusion 1.5; Minimax: DiT-XL/2 "
        "256 + VAE), loaded with local_files_only=True; None: train the small generator here",
    )
    ae_channels: tuple[int, ...] | None = Field(
        None,
        description="AutoencoderKL block widths (latents are 2^(len-1) times smaller); None: the resolution's preset",
    )
    ae_steps: int = Field(600, ge=1, description="autoencoder training steps")
    ae_batch_size: int = Field(64, ge=1, description="autoencoder batch size")
    ae_lr: float = Field(2e-3, gt=0, description="autoencoder AdamW learning rate (one-cycle)")
    ae_kl_weight: float = Field(1e-6, ge=0, description="KL weight of the autoencoder loss (SD's VAE: 1e-6)")
    unet_channels: tuple[int, ...] | None = Field(
        None, description="UNet2DModel block widths (last level with attention); None: the resolution's preset"
    )
    unet_steps: int = Field(3500, ge=1, description="denoiser training steps")
    unet_batch_size: int = Field(128, ge=1, description="denoiser batch size")
    unet_lr: float = Field(2e-3, gt=0, description="denoiser AdamW learning rate (one-cycle)")
    class_dropout: float = Field(0.1, ge=0, le=1, description="labels replaced by the null class (for guidance)")
    train_timesteps: int = Field(1000, ge=2, description="DDPM training timesteps (cosine schedule)")
    generator_seed: int = Field(0, description="seed of the generator's training (shared by every method and IPC)")
    sample_steps: int = Field(50, ge=1, description="DDIM sampling steps (both references: 50)")

    def generator_fields(self) -> dict:
        return {k: getattr(self, k) for k in GENERATOR_FIELDS}


TINY_GENERATOR = {
    "ae_channels": (8, 8, 8),
    "ae_steps": 2,
    "ae_batch_size": 8,
    "unet_channels": (16, 16),
    "unet_steps": 2,
    "unet_batch_size": 8,
    "sample_steps": 2,
    "train_timesteps": 20,
}
"""A generator that trains in a second (smoke tests, conformance)."""
