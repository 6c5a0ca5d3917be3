"""D4M and Minimax on a `LatentDiffusion` backbone (heavy module: imported inside `synthesize`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rd3_plugin_generative.algorithms import (
    EMA,
    add_gammas,
    kmeans,
    mark_trainable,
    memory_losses,
    new_memories,
    update_memories,
)
from rd3_plugin_generative.generator import LatentDiffusion


def class_latents(model: LatentDiffusion, real, index: torch.Tensor, device) -> torch.Tensor:
    """Clean scaled latents of real images (D4M's encoding of the training set)."""
    return model.encode(real.raw(index).float().to(device) / 255)


def d4m(ctx, cfg, model: LatentDiffusion, labels_to_model=None) -> tuple[torch.Tensor, dict]:
    """Per class: k-means (k = ipc) on the flattened clean latents of its real images; each centre
    noised to `strength` of a `sample_steps` DDIM schedule and denoised with the class as
    condition and guidance `guidance`; decoded. Returns pixels [N, C, H, W] in [0, 1] and meta."""
    real, device = ctx.real_data, ctx.device
    out, sizes, inertia = [], [], []
    with ctx.progress(ctx.num_classes, "d4m: k-means prototypes and img2img per class") as bar:
        for c in range(ctx.num_classes):
            index = real.class_indices(c)
            if cfg.kmeans_pool is not None and cfg.kmeans_pool < len(index):
                index = real.sample_indices(c, cfg.kmeans_pool, ctx.generator)
            z = class_latents(model, real, index, device)
            centres, assign = kmeans(z.flatten(1), ctx.ipc, ctx.generator, cfg.kmeans_iterations)
            sizes.append(torch.bincount(assign.cpu(), minlength=ctx.ipc).tolist())
            inertia.append(float(((z.flatten(1) - centres[assign]) ** 2).sum()))
            target = c if labels_to_model is None else labels_to_model[c]
            labels = torch.full((ctx.ipc,), target, dtype=torch.int64, device=device)
            latents = model.sample(
                labels,
                guidance=cfg.guidance,
                steps=cfg.sample_steps,
                generator=ctx.generator,
                start=centres.view(ctx.ipc, *z.shape[1:]),
                strength=cfg.strength,
            )
            out.append(model.decode(latents))
            bar.advance(1)
    return torch.cat(out), {"cluster_sizes": sizes, "kmeans_inertia": inertia}


def minimax(ctx, cfg, model: LatentDiffusion, labels_to_model=None) -> tuple[torch.Tensor, dict]:
    """Minimax fine-tuning of the denoiser (DiffFit's parameter set: biases, norms, gamma scales,
    class embedding; AdamW, weight decay 0) with diffusion loss + representativeness + diversity
    memory losses on the predicted clean latent; EMA weights; then `ipc` guided samples per class."""
    real, device = ctx.real_data, ctx.device
    unet = add_gammas_copy(model)
    trainable = mark_trainable(unet)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    ema = EMA(unet, cfg.ema_decay)
    schedule = model.training_schedule()
    alphas = schedule.alphas_cumprod.to(device)
    timesteps = schedule.config.num_train_timesteps
    pools = []
    for c in range(ctx.num_classes):
        index = real.class_indices(c)
        if cfg.finetune_ipc is not None and cfg.finetune_ipc < len(index):
            index = real.sample_indices(c, cfg.finetune_ipc, ctx.generator)
        pools.append(index)
    pool = torch.cat(pools)
    pool_labels = torch.cat([torch.full((len(p),), c, dtype=torch.int64) for c, p in enumerate(pools)])
    real_memory, pseudo_memory = new_memories(cfg.memory_size)
    order, cursor = torch.randperm(len(pool), generator=ctx.generator), 0
    log = {"diffusion": 0.0, "representativeness": 0.0, "diversity": 0.0}
    unet.train()
    bs = cfg.batch_size
    with ctx.progress(cfg.finetune_steps, "minimax: fine-tune with the memory losses") as bar:
        for step in range(cfg.finetune_steps):
            if cursor + bs > len(order):  # epochs of a shuffled pool, last partial batch dropped
                order, cursor = torch.randperm(len(pool), generator=ctx.generator), 0
            pick = order[cursor : cursor + bs]
            cursor += bs
            ry = pool_labels[pick].to(device)
            x = real.raw(pool[pick]).float().to(device) / 255
            flip = (torch.rand(len(pick), generator=ctx.generator) < 0.5).to(device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            with torch.no_grad():
                posterior = model.vae.encode(model.to_model_space(x)).latent_dist
                z0 = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=ctx.generator).to(
                    device
                )
                z0 = z0 * model.scaling_factor
            y = ry if labels_to_model is None else labels_to_model.to(device)[ry]
            drop = (torch.rand(len(pick), generator=ctx.generator) < cfg.class_dropout).to(device)
            y = torch.where(drop, torch.full_like(y, model.null_class), y)
            t = torch.randint(0, timesteps, (len(pick),), generator=ctx.generator).to(device)
            noise = torch.randn(z0.shape, generator=ctx.generator).to(device)
            a = alphas[t].view(-1, 1, 1, 1)
            zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
            eps = model.eps(unet, zt, t, y)
            loss = F.mse_loss(eps, noise)
            x0_hat = (zt - (1 - a).sqrt() * eps) / a.sqrt()
            rep, div = memory_losses(x0_hat, ry, real_memory, pseudo_memory, cfg.lambda_r, cfg.lambda_d)
            update_memories(z0, x0_hat, ry, real_memory, pseudo_memory)
            total = loss + rep + div
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            ema.update()
            for k, v in (("diffusion", loss), ("representativeness", rep), ("diversity", div)):
                log[k] = 0.9 * log[k] + 0.1 * float(v.detach()) if step else float(v.detach())
            bar.advance(1, loss=round(log["diffusion"], 4))
    sampler = ema.model.eval()
    out = []
    with ctx.progress(ctx.num_classes, "minimax: guided sampling per class") as bar:
        for c in range(ctx.num_classes):
            target = c if labels_to_model is None else int(labels_to_model[c])
            labels = torch.full((ctx.ipc,), target, dtype=torch.int64, device=device)
            latents = model.sample(
                labels, guidance=cfg.guidance, steps=cfg.sample_steps, generator=ctx.generator, unet=sampler
            )
            out.append(model.decode(latents))
            bar.advance(1)
    meta = {
        "trainable_parameters": sum(p.numel() for p in params),
        "total_parameters": sum(p.numel() for p in unet.parameters()),
        "trainable_tensors": len(trainable),
        "final_losses": log,
    }
    return torch.cat(out), meta


def add_gammas_copy(model: LatentDiffusion):
    import copy

    unet = copy.deepcopy(model.unet)
    add_gammas(unet)
    return unet


def base_samples(model: LatentDiffusion, num_classes: int, ipc: int, guidance: float, steps: int, generator, device):
    """Plain guided samples of the base model (the diversity reference)."""
    out = []
    for c in range(num_classes):
        labels = torch.full((ipc,), c, dtype=torch.int64, device=device)
        out.append(model.decode(model.sample(labels, guidance=guidance, steps=steps, generator=generator)))
    return torch.cat(out)
