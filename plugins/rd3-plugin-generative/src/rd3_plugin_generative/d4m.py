"""rd3-harness plugin `d4m`: D4M (Su et al., CVPR 2024), prototypes in the latent space of a
diffusion model. Per class, k-means with k = IPC on the clean latents of the real images; each
centre noised to strength 0.7 of a 50-step schedule and denoised with the class as condition and
classifier-free guidance 8; decoded. No teacher in synthesis.

This module stays light (no torch or diffusers at import): `rd3h plugins` imports every plugin.
"""

from __future__ import annotations

from pydantic import Field

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_plugin_generative import __version__
from rd3_plugin_generative.config import TINY_GENERATOR, GeneratorConfig

CITATION = (
    "Duo Su, Junjie Hou, Weizhi Gao, Yingjie Tian, Bowen Tang. D4M: Dataset Distillation via "
    "Disentangled Diffusion Model. CVPR 2024. arXiv:2407.15138"
)

SMOKE_CONFIG = {**TINY_GENERATOR, "kmeans_pool": 20}
"""Config overrides that make a synthesis on the smoke protocol fast (read by `check_plugin`)."""


class Config(GeneratorConfig, frozen=True, extra="forbid"):
    """D4M settings (defaults: the reference code, suduo94/D4M at da35d10) and the generator's."""

    strength: float = Field(0.7, ge=0, le=1, description="img2img strength: the last int(steps * strength) steps run")
    guidance: float = Field(8.0, ge=0, description="classifier-free guidance scale (D4M: 8)")
    kmeans_pool: int | None = Field(
        None, ge=1, description="cluster this many random real images per class (None: every image, as D4M)"
    )
    kmeans_iterations: int = Field(100, ge=1, description="at most this many Lloyd iterations")
    negative_prompt: str = Field(
        "cartoon, anime, painting", description="with model_path (Stable Diffusion) only: the unconditional prompt"
    )
    prompt_template: str = Field("{name}", description="with model_path only: the text prompt of a class")
    class_names: tuple[str, ...] | None = Field(
        None, description="with model_path only: class names for the prompts (None: the dataset's, else 'class N')"
    )
    sd_size: int = Field(512, ge=8, description="with model_path only: images are resized to this side for SD 1.5")


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="d4m",
        summary="D4M: k-means prototypes of real latents, denoised img2img (strength 0.7, guidance 8) by a latent diffusion model",
        config_model=Config,
        needs_teacher=False,
        needs_real_data=True,
        paper="https://arxiv.org/abs/2407.15138",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    import torch

    cfg: Config = ctx.config
    if cfg.model_path is not None:
        from rd3_plugin_generative.local import d4m_stable_diffusion

        with ctx.asset_time("generator"):
            from rd3_plugin_generative.local import load_sd_img2img

            pipe = load_sd_img2img(cfg.model_path, ctx.device)
        pixels, meta = d4m_stable_diffusion(ctx, cfg, pipe)
    else:
        from rd3_plugin_generative import generator
        from rd3_plugin_generative.methods import d4m

        with ctx.asset_time("generator"):
            model = generator.obtain(ctx, cfg)
        pixels, meta = d4m(ctx, cfg, model)
        meta["generator"] = generator.summary(model)
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    meta["plugin_version"] = __version__
    return SyntheticSet(images=ctx.normalize(pixels.to(ctx.device)), labels=labels, meta=meta)
