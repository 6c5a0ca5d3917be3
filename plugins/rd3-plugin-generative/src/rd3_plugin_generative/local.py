"""Real weights from a local diffusers folder (`--config model_path=DIR`), never the network.

- D4M: a Stable Diffusion 1.5 folder (`StableDiffusionImg2ImgPipeline` layout: vae, unet,
  text_encoder, tokenizer, scheduler), run through diffusers' img2img pipeline with the k-means
  prototypes passed as 4-channel latents (the pipeline's documented latent input).
- Minimax: a DiT folder (`DiTPipeline` layout: `transformer/` with a DiTTransformer2DModel,
  `vae/` with an AutoencoderKL, optionally `scheduler/`), fine-tuned and sampled by
  `methods.minimax` like the generator trained here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from rd3_harness import UsageError

# Class names used in D4M's text prompts when the config gives none.
CLASS_NAMES = {
    "fashion-mnist": (
        "T-shirt",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    ),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


def _folder(path: str) -> Path:
    folder = Path(os.path.expanduser(path))
    if not folder.is_dir():
        raise UsageError(
            f"model_path={path!r} is not a folder (a local diffusers model folder is needed; nothing is downloaded)"
        )
    return folder


def _offline():
    """Belt and braces: the hub may not be reached while loading."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_sd_img2img(path: str, device: torch.device):
    """A Stable Diffusion img2img pipeline from a local folder (local_files_only=True), DDIM scheduler."""
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    _offline()
    folder = _folder(path)
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        folder, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    if device.type != "meta":
        pipe = pipe.to(device)
    return pipe


def d4m_stable_diffusion(ctx, cfg, pipe) -> tuple[torch.Tensor, dict]:
    """D4M with Stable Diffusion: real images resized to `sd_size`, VAE-encoded (mode x scaling
    factor), k-means per class, img2img from the centres with the class prompt, strength 0.7,
    guidance 8 and the negative prompt; back to the protocol's resolution and channels."""
    from rd3_plugin_generative.algorithms import kmeans

    real, device = ctx.real_data, ctx.device
    names = cfg.class_names or CLASS_NAMES.get(ctx.dataset) or tuple(f"class {c}" for c in range(ctx.num_classes))
    if len(names) != ctx.num_classes:
        raise UsageError(f"d4m: class_names has {len(names)} names for {ctx.num_classes} classes")
    vae = pipe.vae
    sf = vae.config.scaling_factor
    channels = ctx.image_shape[0]
    out, sizes = [], []
    with ctx.progress(ctx.num_classes, "d4m (Stable Diffusion): prototypes and img2img") as bar:
        for c in range(ctx.num_classes):
            index = real.class_indices(c)
            if cfg.kmeans_pool is not None and cfg.kmeans_pool < len(index):
                index = real.sample_indices(c, cfg.kmeans_pool, ctx.generator)
            latents = []
            for i in range(0, len(index), 32):
                x = real.raw(index[i : i + 32]).float().to(device) / 255
                x = F.interpolate(x, size=(cfg.sd_size, cfg.sd_size), mode="bilinear", align_corners=False)
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
                with torch.no_grad():
                    latents.append(vae.encode((x * 2 - 1).to(vae.dtype)).latent_dist.mode() * sf)
            z = torch.cat(latents).float()
            centres, assign = kmeans(z.flatten(1), ctx.ipc, ctx.generator, cfg.kmeans_iterations)
            sizes.append(torch.bincount(assign.cpu(), minlength=ctx.ipc).tolist())
            seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator))
            prompt = cfg.prompt_template.format(name=names[c])
            images = pipe(
                prompt=[prompt] * ctx.ipc,
                negative_prompt=[cfg.negative_prompt] * ctx.ipc,
                image=centres.view(ctx.ipc, *z.shape[1:]).to(vae.dtype),
                strength=cfg.strength,
                guidance_scale=cfg.guidance,
                num_inference_steps=cfg.sample_steps,
                generator=torch.Generator().manual_seed(seed),
                output_type="pt",
            ).images
            images = F.interpolate(images.float().to(device), size=ctx.image_shape[1:], mode="bilinear", antialias=True)
            if channels == 1:
                images = images.mean(1, keepdim=True)
            out.append(images.clamp(0, 1))
            bar.advance(1)
    return torch.cat(out), {"cluster_sizes": sizes, "model_path": str(cfg.model_path), "prompts": list(names)}


def load_dit(path: str, ctx):
    """A DiT transformer + VAE from a local folder as a `LatentDiffusion` (null class = the
    transformer's `num_embeds_ada_norm`; images resized to the transformer's pixel size)."""
    from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel

    from rd3_plugin_generative.generator import LatentDiffusion

    _offline()
    folder = _folder(path)
    transformer = DiTTransformer2DModel.from_pretrained(folder, subfolder="transformer", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    if (folder / "scheduler").is_dir():
        schedule = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True).config
    else:  # DiT's training schedule: 1000 linear steps
        schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").config
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    size = transformer.config.sample_size * f
    model = LatentDiffusion(
        vae.to(ctx.device).eval(),
        transformer.to(ctx.device).eval(),
        float(vae.config.scaling_factor),
        int(transformer.config.num_embeds_ada_norm),
        ctx.image_shape[1],
        size,
        int(schedule["num_train_timesteps"]),
        info={"model_path": str(folder), "data_channels": ctx.image_shape[0]},
        resize=True,
        scheduler_config=dict(schedule),
    )
    return model
