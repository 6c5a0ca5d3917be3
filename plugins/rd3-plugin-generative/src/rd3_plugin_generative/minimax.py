"""rd3-harness plugin `minimax`: Minimax diffusion (Gu et al., CVPR 2024). The class-conditional
denoiser is fine-tuned on the target classes with DiffFit's parameter set (biases, norms, gamma
scales, class embedding; AdamW 1e-3, weight decay 0) under the diffusion loss plus
lambda_r (1 - min cos(x0_hat, M_c)) + lambda_d max cos(x0_hat, D_c) (each divided by the classes
in the batch; M_c: FIFO of 64 real latents, D_c: of 64 past predictions); EMA weights sample IPC
images per class with 50 steps and guidance 4.

This module stays light (no torch or diffusers at import): `rd3h plugins` imports every plugin.
"""

from __future__ import annotations

from pydantic import Field

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_plugin_generative import __version__
from rd3_plugin_generative.config import TINY_GENERATOR, GeneratorConfig

CITATION = (
    "Jianyang Gu, Saeed Vahidian, Vyacheslav Kungurtsev, Haonan Wang, Wei Jiang, Yang You, Yiran Chen. "
    "Efficient Dataset Distillation via Minimax Diffusion. CVPR 2024. arXiv:2311.15529"
)

SMOKE_CONFIG = {**TINY_GENERATOR, "finetune_steps": 3, "batch_size": 8}
"""Config overrides that make a synthesis on the smoke protocol fast (read by `check_plugin`)."""


class Config(GeneratorConfig, frozen=True, extra="forbid"):
    """Minimax settings (defaults: vimar-gu/MinimaxDiffusion at 969fc6f, except the step count and
    EMA decay, scaled to a CPU budget) and the generator's."""

    lambda_r: float = Field(0.002, ge=0, description="representativeness weight (lambda_pos)")
    lambda_d: float = Field(0.008, ge=0, description="diversity weight (lambda_neg)")
    memory_size: int = Field(64, ge=1, description="items per class in each FIFO memory")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate, weight decay 0")
    finetune_steps: int = Field(
        300, ge=1, description="fine-tuning steps (reference: 8 epochs at batch 8, ~12000 steps on ImageWoof)"
    )
    batch_size: int = Field(32, ge=1, description="fine-tuning batch size (reference: 8)")
    finetune_ipc: int | None = Field(
        None, ge=1, description="real images per class in the fine-tuning set (None: all, as run.sh's -1)"
    )
    finetune_class_dropout: float = Field(
        0.1, ge=0, le=1, description="labels dropped to the null class while fine-tuning (DiT's label dropout)"
    )
    ema_decay: float = Field(
        0.995, ge=0, lt=1, description="EMA decay of the sampled weights (reference 0.9999 over ~12000 steps)"
    )
    guidance: float = Field(4.0, ge=0, description="classifier-free guidance scale (Minimax: 4)")
    class_ids: tuple[int, ...] | None = Field(
        None, description="with model_path only: the DiT's class id of each target class (None: 0..K-1)"
    )


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="minimax",
        summary="Minimax diffusion: parameter-efficient fine-tuning with representativeness/diversity memories, then guided sampling",
        config_model=Config,
        needs_teacher=False,
        needs_real_data=True,
        paper="https://arxiv.org/abs/2311.15529",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    import torch

    from rd3_plugin_generative import generator
    from rd3_plugin_generative.methods import minimax

    cfg: Config = ctx.config
    labels_to_model = None
    with ctx.asset_time("generator"):
        if cfg.model_path is not None:
            from rd3_plugin_generative.local import load_dit

            model = load_dit(cfg.model_path, ctx)
            ids = cfg.class_ids or tuple(range(ctx.num_classes))
            labels_to_model = torch.tensor(ids, dtype=torch.int64, device=ctx.device)
        else:
            model = generator.obtain(ctx, cfg)
    pixels, meta = minimax(ctx, cfg, model, labels_to_model)
    meta["generator"] = generator.summary(model)
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    meta["plugin_version"] = __version__
    return SyntheticSet(images=ctx.normalize(pixels.to(ctx.device)), labels=labels, meta=meta)
