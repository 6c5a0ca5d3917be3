"""Recognisability and within-class diversity of synthetic sets (the generation family's checks).

For each saved set (a folder with manifest.json + images.safetensors, as `rd3h run`/`synthesize`
write them): the share of its images that the protocol's evaluation teacher classifies as their
intended class (overall and the worst class), and the within-class diversity: the mean pairwise
cosine distance (1 - cos) of the teacher's penultimate features between images of one class,
averaged over classes. `--base` adds plain guided samples of the generator a set came from (same
number per class, its cached weights, `--base-guidance`), `--real` random real images per class.

Run: `python benchmarks/generative_check.py SET_DIR [SET_DIR ...] [-p cpu/fmnist-ipc10.v1] [--base]
[--real] [--json]` (RD3_HOME must hold the protocol's teacher and, for --base, the generator).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rd3_harness.data.synset import load_synset
from rd3_harness.models import embed
from rd3_harness.plugins import get_plugins
from rd3_harness.settings import Settings
from rd3_harness.workspace import open_workspace


@torch.no_grad()
def measure(teacher, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    logits, feats = [], []
    for i in range(0, len(images), 500):
        x = images[i : i + 500]
        feats.append(embed(teacher, x).float())
        logits.append(teacher(x).float())
    pred = torch.cat(logits).argmax(1)
    feats = torch.nn.functional.normalize(torch.cat(feats), dim=1)
    per_class_rate, per_class_div = [], []
    for c in range(num_classes):
        mask = labels == c
        per_class_rate.append(float((pred[mask] == c).float().mean()))
        f = feats[mask]
        n = len(f)
        cos = f @ f.T
        per_class_div.append(float((1 - cos).sum() / (n * (n - 1))) if n > 1 else 0.0)
    return {
        "images": len(images),
        "teacher_rate": float((pred == labels).float().mean()),
        "teacher_rate_worst_class": min(per_class_rate),
        "teacher_rate_per_class": [round(r, 3) for r in per_class_rate],
        "diversity": sum(per_class_div) / num_classes,
        "diversity_per_class": [round(d, 4) for d in per_class_div],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sets", nargs="+", type=Path)
    ap.add_argument("-p", "--protocol", default="cpu/fmnist-ipc10.v1")
    ap.add_argument("--base", action="store_true", help="add plain guided samples of each set's generator")
    ap.add_argument("--base-guidance", type=float, default=4.0)
    ap.add_argument("--base-steps", type=int, default=50)
    ap.add_argument("--real", action="store_true", help="add random real images (seed 0), as many per class")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    settings = Settings(device="cpu")
    ws = open_workspace(get_plugins().registries, args.protocol, settings)
    teacher = ws.teacher(ws.protocol.teacher).model.eval()
    k = ws.train.num_classes
    rows, bases = {}, {}
    ipc = None
    for folder in args.sets:
        synset, manifest = load_synset(folder)
        ipc = len(synset.labels) // k
        name = f"{manifest.get('method', folder.name)} ({folder.name[:12]})"
        rows[name] = measure(teacher, synset.images, synset.labels, k)
        gen = synset.meta.get("generator", {})
        if args.base and gen.get("key") and gen["key"] not in bases:
            bases[gen["key"]] = ipc
    for key, n in bases.items():
        from rd3_plugin_generative.generator import from_cache
        from rd3_plugin_generative.methods import base_samples

        model = from_cache(settings.home / "cache" / "generator" / key[:24], ws.train, torch.device("cpu"))
        g = torch.Generator().manual_seed(0)
        pixels = base_samples(model, k, n, args.base_guidance, args.base_steps, g, torch.device("cpu"))
        labels = torch.arange(k).repeat_interleave(n)
        rows[f"base model, guidance {args.base_guidance:g} ({key[:12]})"] = measure(
            teacher, ws.train.normalize(pixels), labels, k
        )
    if args.real:
        g = torch.Generator().manual_seed(0)
        n = ipc or 10
        idx = torch.cat([ws.train.sample_indices(c, n, g) for c in range(k)])
        rows["random real images"] = measure(teacher, ws.train.get(idx), torch.arange(k).repeat_interleave(n), k)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'set':<48} {'teacher rate':>12} {'worst class':>11} {'diversity (1-cos)':>18}")
    for name, r in rows.items():
        print(
            f"{name:<48} {100 * r['teacher_rate']:>11.1f}% {100 * r['teacher_rate_worst_class']:>10.1f}% {r['diversity']:>18.4f}"
        )


if __name__ == "__main__":
    main()
