"""The generator asset: a small latent diffusion model trained from scratch on the protocol's real
training set, shared by D4M and Minimax and by every IPC.

An AutoencoderKL maps pixels (padded to a multiple of 4x the latent factor, scaled to [-1, 1]) to
latents multiplied by a scaling factor (1 / std of the training latents, as SD's 0.18215 was
chosen); a class-conditional UNet2DModel (class embedding added to the time embedding, class
`num_classes` being the null class used for classifier-free guidance) predicts the noise under a
DDPM cosine schedule; sampling uses DDIM. Training is seeded by `generator_seed` alone, so the
cached model depends only on (dataset, data, generator config, seed) and is trained once.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DModel

from rd3_plugin_generative.config import GENERATOR_FIELDS, PRESETS, GeneratorConfig

FORMAT = 1
"""Bumped whenever training or the stored format changes (part of the cache key)."""


def resolved(cfg: GeneratorConfig, resolution: int) -> dict:
    """The generator fields with the resolution's preset filled in where the config says None."""
    preset = next(values for bound, values in PRESETS if resolution <= bound)
    fields = cfg.generator_fields()
    for k, v in preset.items():
        if fields.get(k) is None:
            fields[k] = tuple(v)
    return fields


def padded_size(resolution: int, ae_channels: tuple[int, ...]) -> int:
    """Model resolution padded so the latent is a multiple of 4 (two UNet levels)."""
    unit = 4 * 2 ** (len(ae_channels) - 1)
    return math.ceil(resolution / unit) * unit


def build_vae(channels: int, size: int, ae_channels: tuple[int, ...]) -> AutoencoderKL:
    n = len(ae_channels)
    return AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(ae_channels),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=math.gcd(8, *ae_channels),
        sample_size=size,
        mid_block_add_attention=False,
    )


def build_unet(num_classes: int, latent_size: int, unet_channels: tuple[int, ...]) -> UNet2DModel:
    n = len(unet_channels)
    down = ("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",)
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1)
    return UNet2DModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(unet_channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=1,
        num_class_embeds=num_classes + 1,
        norm_num_groups=math.gcd(16, *unet_channels),
        attention_head_dim=min(32, unet_channels[-1]),
    )


def training_scheduler(train_timesteps: int) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=train_timesteps, beta_schedule="squaredcos_cap_v2")


@dataclass
class LatentDiffusion:
    """A trained (or loaded) generator: pixels <-> scaled latents, guided noise prediction."""

    vae: AutoencoderKL
    unet: UNet2DModel
    scaling_factor: float
    num_classes: int
    resolution: int
    padded: int
    train_timesteps: int
    info: dict[str, Any] = field(default_factory=dict)
    resize: bool = False
    """False: pad to `padded` (the generator trained here); True: resize to `padded` and map
    channels (real weights at their own resolution, RGB)."""
    scheduler_config: dict | None = None
    """The training noise schedule; None: this package's cosine schedule of `train_timesteps`."""

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (self.vae.config.latent_channels, self.padded // f, self.padded // f)

    def to_model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.resize:
            x = F.interpolate(pixels, size=(self.padded, self.padded), mode="bilinear", align_corners=False)
            want = self.vae.config.in_channels
            if x.shape[1] != want:
                x = x.mean(1, keepdim=True).expand(-1, want, -1, -1) if want != 1 else x.mean(1, keepdim=True)
            return x * 2 - 1
        pad = self.padded - self.resolution
        x = pixels * 2 - 1
        if pad:
            x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), mode="replicate")
        return x

    def from_model_space(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        if self.resize:
            x = F.interpolate(
                x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=True
            )
            if x.shape[1] != channels:
                x = x.mean(1, keepdim=True).expand(-1, channels, -1, -1).contiguous()
            return ((x + 1) / 2).clamp(0, 1)
        pad, r = self.padded - self.resolution, self.resolution
        return ((x[:, :, pad // 2 : pad // 2 + r, pad // 2 : pad // 2 + r] + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Clean latents (posterior mode) times the scaling factor, for pixels in [0, 1]."""
        out = [
            self.vae.encode(self.to_model_space(pixels[i : i + batch_size])).latent_dist.mode()
            for i in range(0, len(pixels), batch_size)
        ]
        return torch.cat(out) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Pixels in [0, 1] at the model resolution."""
        channels = self.info.get("data_channels", self.vae.config.in_channels)
        out = []
        for i in range(0, len(latents), batch_size):
            x = self.vae.decode(latents[i : i + batch_size] / self.scaling_factor).sample
            out.append(self.from_model_space(x, channels))
        return torch.cat(out)

    def eps(self, denoiser: torch.nn.Module, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The denoiser's noise prediction (a DiT's learned-variance channels dropped)."""
        if isinstance(denoiser, UNet2DModel):
            return denoiser(z, t, class_labels=labels).sample
        t = t.reshape(-1).expand(len(z)) if t.numel() == 1 else t
        return denoiser(z, timestep=t, class_labels=labels).sample[:, : z.shape[1]]

    def guided_eps(self, unet: UNet2DModel, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, scale: float):
        """Classifier-free guidance: eps_null + scale * (eps_class - eps_null)."""
        null = torch.full_like(labels, self.null_class)
        eps = self.eps(unet, torch.cat([z, z]), t, torch.cat([labels, null]))
        cond, uncond = eps.chunk(2)
        return uncond + scale * (cond - uncond)

    def training_schedule(self) -> DDPMScheduler:
        if self.scheduler_config is not None:
            return DDPMScheduler.from_config(self.scheduler_config)
        return training_scheduler(self.train_timesteps)

    def ddim(self, steps: int) -> DDIMScheduler:
        # latents have unit std: clipping the clean-latent estimate to [-1, 1] (diffusers' default,
        # meant for pixel-space models; Stable Diffusion's schedulers turn it off) ruins the samples
        scheduler = DDIMScheduler.from_config(self.training_schedule().config, clip_sample=False)
        scheduler.set_timesteps(steps)
        return scheduler

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor,
        *,
        guidance: float,
        steps: int,
        generator: torch.Generator,
        start: torch.Tensor | None = None,
        strength: float = 1.0,
        unet: UNet2DModel | None = None,
    ) -> torch.Tensor:
        """DDIM sampling of latents for `labels`; with `start` (clean latents), img2img: noise them
        to `strength` of the schedule (diffusers' rule: the last int(steps * strength) steps) and
        denoise from there."""
        unet = unet or self.unet
        device = labels.device
        scheduler = self.ddim(steps)
        timesteps = scheduler.timesteps
        if start is not None:
            keep = min(int(steps * strength), steps)
            if keep == 0:
                return start
            timesteps = timesteps[steps - keep :]
        noise = torch.randn((len(labels), *self.latent_shape), generator=generator).to(device)
        if start is None:
            z = noise
        else:
            t0 = timesteps[:1].repeat(len(labels))
            z = scheduler.add_noise(start, noise, t0.to(device))
        for t in timesteps:
            tt = t.to(device)
            eps = self.guided_eps(unet, z, tt, labels, guidance)
            z = scheduler.step(eps, t, z).prev_sample
        return z


# ----------------------------------------------------------------------------------------------
# training and the cache


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(dataset: str, real, fields: dict) -> tuple[str, dict]:
    """The generator's identity: dataset, the training split (size, shape, digest of its labels),
    the resolved generator settings and seed, and the training code's format."""
    labels = real.labels.to(torch.int64).cpu().contiguous()
    identity = {
        "dataset": dataset,
        "images": len(real),
        "image_shape": list(real.image_shape),
        "num_classes": int(real.num_classes),
        "labels_sha256": hashlib.sha256(labels.numpy().tobytes()).hexdigest(),
        "generator": {k: fields[k] for k in GENERATOR_FIELDS},
        "format": FORMAT,
    }
    return _digest(identity), identity


def _one_cycle(opt, lr: float, steps: int):
    """Linear warm-up over the first 5 % of the steps (at least one), then cosine decay to 0."""
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train(real, num_classes: int, fields: dict, device: torch.device, progress: Callable) -> LatentDiffusion:
    """Train the autoencoder, then the denoiser on its latents; every draw from `generator_seed`."""
    c, r, _ = real.image_shape
    ae_channels, unet_channels = tuple(fields["ae_channels"]), tuple(fields["unet_channels"])
    size = padded_size(r, ae_channels)
    g = torch.Generator().manual_seed(fields["generator_seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(fields["generator_seed"])
        vae = build_vae(c, size, ae_channels).to(device)
        unet = build_unet(num_classes, size // 2 ** (len(ae_channels) - 1), unet_channels).to(device)
    model = LatentDiffusion(vae, unet, 1.0, num_classes, r, size, fields["train_timesteps"], info={"data_channels": c})
    n = len(real)
    stats: dict[str, float] = {}
    total = fields["ae_steps"] + fields["unet_steps"] + 1
    with progress(total, "generator: train autoencoder, encode, train denoiser") as bar:
        # 1. autoencoder: L1 reconstruction + small KL, on random batches of the training set
        opt = torch.optim.AdamW(vae.parameters(), fields["ae_lr"])
        sched = _one_cycle(opt, fields["ae_lr"], fields["ae_steps"])
        vae.train()
        for _ in range(fields["ae_steps"]):
            idx = torch.randint(0, n, (fields["ae_batch_size"],), generator=g)
            x = model.to_model_space(real.raw(idx).float().to(device) / 255)
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g).to(device)
            rec = vae.decode(z).sample
            loss = F.l1_loss(rec, x) + fields["ae_kl_weight"] * posterior.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            stats["ae_loss"] = float(loss.detach())
            bar.advance(1, ae_l1=round(stats["ae_loss"], 4))
        vae.eval()
        # 2. latents of the whole training set (posterior mode), scaling factor 1 / std
        latents, labels = [], []
        with torch.no_grad():
            for start in range(0, n, 500):
                idx = torch.arange(start, min(start + 500, n))
                latents.append(
                    vae.encode(model.to_model_space(real.raw(idx).float().to(device) / 255)).latent_dist.mode()
                )
                labels.append(real.labels[idx].to(device))
        latents, labels = torch.cat(latents), torch.cat(labels)
        std = float(latents.std())
        model.scaling_factor = 1.0 / std if std > 0 and math.isfinite(std) else 1.0
        latents = latents * model.scaling_factor
        bar.advance(1)
        # 3. denoiser: epsilon prediction, labels dropped to the null class with class_dropout
        scheduler = training_scheduler(fields["train_timesteps"])
        alphas = scheduler.alphas_cumprod.to(device)
        opt = torch.optim.AdamW(unet.parameters(), fields["unet_lr"])
        sched = _one_cycle(opt, fields["unet_lr"], fields["unet_steps"])
        unet.train()
        bs = fields["unet_batch_size"]
        for _ in range(fields["unet_steps"]):
            idx = torch.randint(0, len(latents), (bs,), generator=g)
            z0, y = latents[idx.to(device)], labels[idx.to(device)].clone()
            drop = (torch.rand(bs, generator=g) < fields["class_dropout"]).to(device)
            y = torch.where(drop, torch.full_like(y, num_classes), y)
            noise = torch.randn(z0.shape, generator=g).to(device)
            t = torch.randint(0, fields["train_timesteps"], (bs,), generator=g).to(device)
            a = alphas[t].view(-1, 1, 1, 1)
            zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
            loss = F.mse_loss(unet(zt, t, class_labels=y).sample, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            stats["unet_loss"] = float(loss.detach())
            bar.advance(1, eps_mse=round(stats["unet_loss"], 4))
        unet.eval()
    with torch.no_grad():
        idx = torch.arange(min(n, 500))
        x = real.raw(idx).float().to(device) / 255
        stats["recon_mse"] = float(F.mse_loss(model.decode(model.encode(x)), x))
    model.info.update(stats)
    return model


def _save(model: LatentDiffusion, folder: Path, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"weights.pt.tmp{os.getpid()}"
    state = {
        "vae": {k: v.detach().cpu() for k, v in model.vae.state_dict().items()},
        "unet": {k: v.detach().cpu() for k, v in model.unet.state_dict().items()},
        "scaling_factor": model.scaling_factor,
    }
    torch.save(state, tmp)
    tmp.replace(folder / "weights.pt")
    meta = {**meta, "sha256": _file_sha256(folder / "weights.pt")}
    (folder / "meta.json.tmp").write_text(json.dumps(meta, indent=2, sort_keys=True))
    (folder / "meta.json.tmp").replace(folder / "meta.json")


def _load(folder: Path, real, num_classes: int, fields: dict, device: torch.device) -> LatentDiffusion | None:
    meta_path, weights = folder / "meta.json", folder / "weights.pt"
    if not (meta_path.is_file() and weights.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("sha256") != _file_sha256(weights):
        return None  # corrupt or altered: retrain
    state = torch.load(weights, map_location="cpu", weights_only=True)
    c, r, _ = real.image_shape
    ae_channels = tuple(fields["ae_channels"])
    size = padded_size(r, ae_channels)
    vae = build_vae(c, size, ae_channels)
    unet = build_unet(num_classes, size // 2 ** (len(ae_channels) - 1), tuple(fields["unet_channels"]))
    vae.load_state_dict(state["vae"])
    unet.load_state_dict(state["unet"])
    model = LatentDiffusion(
        vae.to(device).eval(),
        unet.to(device).eval(),
        float(state["scaling_factor"]),
        num_classes,
        r,
        size,
        fields["train_timesteps"],
        info={**meta, "data_channels": c},
    )
    return model


def obtain(ctx, cfg: GeneratorConfig) -> LatentDiffusion:
    """The trained generator for this protocol's data and `cfg`: loaded from the shared cache
    (`ctx.cache_dir.parent / "generator"`, checked by sha256) or trained once and stored there."""
    real = ctx.real_data
    fields = resolved(cfg, real.resolution)
    key, identity = cache_key(ctx.dataset, real, fields)
    folder = Path(ctx.cache_dir).parent / "generator" / key[:24]
    model = _load(folder, real, ctx.num_classes, fields, ctx.device)
    if model is not None:
        model.info["cache"] = "hit"
        return model
    wall, cpu = time.perf_counter(), time.process_time()
    trained = train(real, ctx.num_classes, fields, ctx.device, ctx.progress)
    meta = {
        "key": key,
        "identity": identity,
        "train_wall_s": time.perf_counter() - wall,
        "train_cpu_s": time.process_time() - cpu,
        "threads": torch.get_num_threads(),
        "trained_on": str(ctx.device),
        **trained.info,
    }
    if ctx.device.type == "meta":  # nothing real to keep
        trained.info.update(meta, cache="none")
        return trained
    _save(trained, folder, meta)
    model = _load(folder, real, ctx.num_classes, fields, ctx.device)  # the stored weights, as a later run sees them
    model.info["cache"] = "trained"
    return model


def summary(model: LatentDiffusion) -> dict:
    """What a synthetic set's meta records about the generator it came from."""
    keep = ("key", "sha256", "train_wall_s", "train_cpu_s", "threads", "ae_loss", "unet_loss", "recon_mse", "cache")
    out = {k: model.info[k] for k in keep if k in model.info}
    out["scaling_factor"] = model.scaling_factor
    out["latent_shape"] = list(model.latent_shape)
    return out


def clone_unet(unet: UNet2DModel) -> UNet2DModel:
    return copy.deepcopy(unet)


@contextlib.contextmanager
def no_grad_eval(module: torch.nn.Module):
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was)


def from_cache(folder: Path, real, device: torch.device) -> LatentDiffusion:
    """A cached generator by its folder (`.../generator/<key>`), its settings read from its meta
    (for analysis scripts: e.g. plain base-model samples)."""
    meta = json.loads((Path(folder) / "meta.json").read_text())
    identity = meta["identity"]
    model = _load(Path(folder), real, identity["num_classes"], identity["generator"], device)
    if model is None:
        raise ValueError(f"{folder}: no intact generator there (missing files or sha256 mismatch)")
    return model
