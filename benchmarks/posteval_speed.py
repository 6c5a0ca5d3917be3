"""Post-evaluation speed: the engine against a per-sample pipeline and the compute floor.

One protocol, one synthetic set (random real images), one seed, all in one process:
  (a) the engine end to end (training loop only; test evaluation excluded),
  (b) a per-sample pipeline as the original repositories do it: PIL images, torchvision
      transforms per image inside a DataLoader, CutMix on the batch, teacher on each batch,
  (c) the compute floor: teacher forward + student forward/backward + optimizer step on batches
      of the same shape, no augmentation, no bookkeeping,
  (d) the augmentation + mixing stage alone, batched on the device versus per-sample PIL, at
      32, 64 and 224 px.
Run: `python benchmarks/posteval_speed.py [--protocol P] [--epochs N] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision.transforms as T
from PIL import Image

from rd3_harness.models import create_model
from rd3_harness.plugins import get_plugins
from rd3_harness.protocol.schema import Augmentation, CutMix, Protocol, RandomResizedCrop
from rd3_harness.settings import Settings
from rd3_harness.training.augment import Augmenter
from rd3_harness.training.labels import TeacherEnsemble
from rd3_harness.training.losses import Targets, compute_loss
from rd3_harness.training.optim import build_optimizer
from rd3_harness.training.trainer import Engine
from rd3_harness.workspace import open_workspace


def variant(protocol: Protocol, **evaluation) -> Protocol:
    data = protocol.model_dump(mode="json")
    data["evaluation"].update(evaluation)
    return Protocol.model_validate(data)


def synthetic_set(ws):
    g = torch.Generator().manual_seed(0)
    idx = torch.cat([ws.train.sample_indices(c, ws.protocol.ipc, g) for c in range(ws.info.num_classes)])
    return ws.train.get(idx), ws.train.labels[idx]


def engine_rate(ws, images, labels, teacher, epochs: int, precision: str, channels_last: bool | None) -> float:
    p = variant(ws.protocol, epochs=epochs, seeds=[0], precision=precision)
    tiny_test = ws.test.subset(torch.arange(10))
    engine = Engine(
        p,
        images,
        labels,
        [teacher],
        tiny_test,
        models=ws.registries.models,
        device=ws.train.device,
        fill=ws.fill(),
        channels_last=channels_last,
    )
    (result,) = engine.run()
    return result.images_seen / result.train_wall_s


class PILSet(torch.utils.data.Dataset):
    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, transform):
        mode = "L" if pixels.shape[1] == 1 else "RGB"
        arrays = (pixels * 255).round().byte().permute(0, 2, 3, 1).numpy()
        self.images = [Image.fromarray(a.squeeze(-1) if mode == "L" else a, mode) for a in arrays]
        self.labels, self.transform = labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def torchvision_transform(spec: Augmentation, size: int, mean, std) -> T.Compose:
    steps = []
    if spec.random_resized_crop is not None:
        steps.append(T.RandomResizedCrop(size, scale=spec.random_resized_crop.scale, antialias=True))
    if spec.horizontal_flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def cutmix(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x))
    h, w = x.shape[-2:]
    cut = int(h * (1 - lam) ** 0.5)
    cy, cx = torch.randint(h, (1,)).item(), torch.randint(w, (1,)).item()
    y1, y2, x1, x2 = max(cy - cut // 2, 0), min(cy + cut // 2, h), max(cx - cut // 2, 0), min(cx + cut // 2, w)
    x = x.clone()
    x[:, :, y1:y2, x1:x2] = x[perm][:, :, y1:y2, x1:x2]
    return x, perm, 1 - (y2 - y1) * (x2 - x1) / (h * w)


def per_sample_rate(ws, images, labels, teacher, epochs: int, workers: int) -> float:
    """The reference repositories' layout: PIL + per-image transforms in a DataLoader."""
    p = ws.protocol
    ev = p.evaluation
    norm = p.dataset.normalization
    data = PILSet(
        ws.train.denormalize(images).clamp(0, 1),
        labels,
        torchvision_transform(ev.augmentation, p.dataset.resolution, norm.mean, norm.std),
    )
    loader = torch.utils.data.DataLoader(
        data, batch_size=ev.batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    torch.manual_seed(0)
    student = create_model(
        get_plugins().registries.models,
        ev.students[0].architecture,
        num_classes=10,
        in_channels=images.shape[1],
        resolution=images.shape[-1],
    )
    optimizer = build_optimizer(ev.optimizer, student)
    teacher.eval()
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            x, perm, lam = cutmix(x, 1.0)
            with torch.no_grad():
                t = teacher(x)
            loss = compute_loss(ev.loss, student(x), Targets(y, y[perm], lam, logits=t))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(x)
    return seen / (time.perf_counter() - start)


def floor_rate(ws, images, labels, teacher, epochs: int, precision: str, channels_last: bool) -> float:
    """Teacher forward + student forward/backward + optimizer step, same shapes, nothing else."""
    ev = ws.protocol.evaluation
    torch.manual_seed(0)
    student = create_model(
        get_plugins().registries.models,
        ev.students[0].architecture,
        num_classes=10,
        in_channels=images.shape[1],
        resolution=images.shape[-1],
    )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    student = student.to(memory_format=fmt)
    ensemble = TeacherEnsemble([teacher], "mean", precision, channels_last)
    optimizer = build_optimizer(ev.optimizer, student)
    batches = [
        (images[i : i + ev.batch_size].contiguous(memory_format=fmt), labels[i : i + ev.batch_size])
        for i in range(0, len(images), ev.batch_size)
    ]
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in batches:
            t = ensemble(x)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = student(x)
            loss = compute_loss(ev.loss, out, Targets(y, y, 1.0, logits=t))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(x)
    return seen / (time.perf_counter() - start)


def augmentation_rates(size: int, n: int = 256, rounds: int = 5) -> tuple[float, float]:
    """Images/s of random-resized crop + flip + CutMix: batched tensors vs per-sample PIL."""
    spec = Augmentation(random_resized_crop=RandomResizedCrop(scale=(0.5, 1.0)), horizontal_flip=True, mix=CutMix())
    x = torch.rand(n, 3, size, size)
    aug = Augmenter(spec, size)
    g = torch.Generator().manual_seed(0)
    aug(x, g)
    start = time.perf_counter()
    for _ in range(rounds):
        aug(x, g)
    batched = n * rounds / (time.perf_counter() - start)
    pil = [Image.fromarray((a * 255).byte().permute(1, 2, 0).numpy()) for a in x]
    tf = torchvision_transform(spec, size, (0.5,) * 3, (0.5,) * 3)
    start = time.perf_counter()
    for _ in range(rounds):
        batch = torch.stack([tf(img) for img in pil])
        cutmix(batch, 1.0)
    per_sample = n * rounds / (time.perf_counter() - start)
    return batched, per_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="cpu/fmnist-ipc10.v1")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ws = open_workspace(get_plugins().registries, args.protocol, Settings(device="cpu"))
    images, labels = synthetic_set(ws)
    teacher = ws.teacher(ws.protocol.teacher).model
    e = args.epochs
    rows = {
        "engine fp32": engine_rate(ws, images, labels, teacher, e, "fp32", False),
        "engine fp32 channels_last": engine_rate(ws, images, labels, teacher, e, "fp32", True),
        "engine bf16 channels_last": engine_rate(ws, images, labels, teacher, e, "bf16", True),
        "floor fp32": floor_rate(ws, images, labels, teacher, e, "fp32", False),
        "floor fp32 channels_last": floor_rate(ws, images, labels, teacher, e, "fp32", True),
        "floor bf16 channels_last": floor_rate(ws, images, labels, teacher, e, "bf16", True),
        "per-sample PIL fp32 (workers 0)": per_sample_rate(ws, images, labels, teacher, e, 0),
        "per-sample PIL fp32 (workers 2)": per_sample_rate(ws, images, labels, teacher, e, 2),
    }
    aug = {size: augmentation_rates(size, n=256 if size < 224 else 64) for size in (32, 64, 224)}
    ratios = {
        "engine/floor time, fp32": rows["floor fp32"] / rows["engine fp32"],
        "engine/floor time, fp32 channels_last": rows["floor fp32 channels_last"] / rows["engine fp32 channels_last"],
        "engine fp32 best / per-sample best (speed-up)": max(rows["engine fp32"], rows["engine fp32 channels_last"])
        / max(rows["per-sample PIL fp32 (workers 0)"], rows["per-sample PIL fp32 (workers 2)"]),
        "engine bf16 / per-sample fp32 best (speed-up)": rows["engine bf16 channels_last"]
        / max(rows["per-sample PIL fp32 (workers 0)"], rows["per-sample PIL fp32 (workers 2)"]),
        **{f"augmentation batched / PIL at {s}px": b / p for s, (b, p) in aug.items()},
    }
    if args.json:
        print(
            json.dumps(
                {"images_per_s": rows, "augmentation": {str(k): v for k, v in aug.items()}, "ratios": ratios}, indent=2
            )
        )
        return
    print(f"protocol {args.protocol}, {len(images)} images, {e} epochs, torch threads {torch.get_num_threads()}")
    for name, rate in rows.items():
        print(f"  {name:<36} {rate:9.0f} img/s")
    for size, (b, p) in aug.items():
        print(f"  augmentation {size:>3}px: batched {b:9.0f} img/s, per-sample PIL {p:9.0f} img/s")
    for name, value in ratios.items():
        print(f"  {name:<48} {value:6.2f}")


if __name__ == "__main__":
    main()
