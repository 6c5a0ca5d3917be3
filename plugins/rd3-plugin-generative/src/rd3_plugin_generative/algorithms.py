"""D4M's prototypes and Minimax's fine-tuning, on any latent diffusion backbone (heavy module)."""

from __future__ import annotations

import copy
from collections import defaultdict, deque

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# D4M: per-class k-means prototypes in latent space


def kmeans(
    x: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on rows of `x` with k-means++ seeding drawn from `generator` (on the CPU).
    Returns (centres [k, d], assignment [n]); stops when the assignment no longer changes. A
    cluster that empties is re-seeded with the point farthest from its centre."""
    n = len(x)
    if k > n:
        raise ValueError(f"k-means: {k} clusters for {n} points")
    first = int(torch.randint(0, n, (1,), generator=generator))
    centres = [x[first]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        w = d2.double().cpu()
        if not bool(w.sum() > 0):
            w = torch.ones_like(w)
        i = int(torch.multinomial(w, 1, generator=generator))
        centres.append(x[i])
        d2 = torch.minimum(d2, ((x - x[i]) ** 2).sum(1))
    c = torch.stack(centres)
    assign = None
    for _ in range(iterations):
        dist = torch.cdist(x, c)
        new = dist.argmin(1)
        if assign is not None and not bool((new != assign).any()):
            break
        assign = new
        counts = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, assign, torch.ones_like(x[:, 0]))
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        c = sums / counts.clamp(min=1).unsqueeze(1)
        for j in torch.nonzero(counts.cpu() == 0).flatten().tolist():
            c[j] = x[int(dist.min(1).values.argmax())]
    return c, assign


# ----------------------------------------------------------------------------------------------
# Minimax: parameter-efficient fine-tuning with representativeness and diversity memories


def add_gammas(model: nn.Module) -> list[str]:
    """DiffFit's learnable scale factors: a scalar `gamma` (initialised to 1) on the output of every
    residual branch (the last conv of each ResNet block, the output projection of each attention
    and of each feed-forward); returns the names of the modules that got one."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    targets = []
    for name, m in model.named_modules():
        if isinstance(m, ResnetBlock2D):
            targets.append((f"{name}.conv2", m.conv2))
        elif isinstance(m, Attention):
            targets.append((f"{name}.to_out.0", m.to_out[0]))
        elif type(m).__name__ == "FeedForward":
            targets.append((f"{name}.net.2", m.net[-1]))
    for _, sub in targets:
        p = next(sub.parameters())
        sub.register_parameter("gamma", nn.Parameter(torch.ones((), device=p.device, dtype=p.dtype)))
        sub.register_forward_hook(lambda mod, args, out: out * mod.gamma)
    return [n for n, _ in targets]


CLASS_EMBEDDING_NAMES = ("class_embedding", "class_embedder")


def mark_trainable(model: nn.Module) -> list[str]:
    """Minimax/DiffFit's parameter-efficient set: biases, normalization layers' scales and shifts,
    the `gamma` scales and the class embedding; everything else frozen. Returns the trainable names."""
    norms = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d)
    allowed = set()
    for mname, m in model.named_modules():
        for pname, _ in m.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if (
                pname == "bias"
                or pname == "gamma"
                or isinstance(m, norms)
                or any(part in CLASS_EMBEDDING_NAMES for part in mname.split("."))
            ):
                allowed.add(full)
    for name, p in model.named_parameters():
        p.requires_grad_(name in allowed)
    return sorted(allowed)


def memory_losses(
    pred: torch.Tensor,
    classes: torch.Tensor,
    real_memory: dict[int, deque],
    pseudo_memory: dict[int, deque],
    lambda_r: float,
    lambda_d: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimax's two criteria for one batch, before the memories take this batch in: per class c
    present whose pseudo memory is not empty,
    representativeness lambda_r / |C| * (1 - min cos(x0_hat_c, M_c)),
    diversity lambda_d / |C| * max cos(x0_hat_c, D_c),
    min/max over every (prediction of class c, memory item) pair; |C| the classes in the batch."""
    present = sorted(set(classes.tolist()))
    rep = pred.new_zeros(())
    div = pred.new_zeros(())
    flat = pred.flatten(1)
    for c in present:
        if len(pseudo_memory[c]) == 0:
            continue
        mine = flat.index_select(0, _where(classes, c).to(flat.device))
        real = torch.stack(list(real_memory[c])).flatten(1)
        past = torch.stack(list(pseudo_memory[c])).flatten(1)
        rep = rep + (1 - _cos(mine, real).min()) * lambda_r / len(present)
        div = div + _cos(mine, past).max() * lambda_d / len(present)
    return rep, div


def update_memories(real: torch.Tensor, pred: torch.Tensor, classes: torch.Tensor, real_memory, pseudo_memory) -> None:
    """FIFO: append this batch's real latents and detached predictions per class (deques with maxlen)."""
    for c in sorted(set(classes.tolist())):
        rows = _where(classes, c).to(real.device)
        for item in real.detach().index_select(0, rows):
            real_memory[c].append(item)
        for item in pred.detach().index_select(0, rows):
            pseudo_memory[c].append(item)


def _where(classes: torch.Tensor, c: int) -> torch.Tensor:
    """Positions of class `c` (computed on the CPU: data-dependent shapes have no meta kernel)."""
    return torch.nonzero(classes.cpu() == c).flatten()


def new_memories(size: int) -> tuple[dict[int, deque], dict[int, deque]]:
    return defaultdict(lambda: deque(maxlen=size)), defaultdict(lambda: deque(maxlen=size))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity [len(a), len(b)]."""
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


class EMA:
    """Exponential moving average of a model's trainable parameters (the frozen ones are equal)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.pairs = [
            (e, p) for (n, e), (_, p) in zip(self.model.named_parameters(), model.named_parameters()) if p.requires_grad
        ]

    @torch.no_grad()
    def update(self) -> None:
        for e, p in self.pairs:
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
