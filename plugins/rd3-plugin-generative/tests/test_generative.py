"""D4M and Minimax on the smoke protocol with a tiny generator (seconds), their algorithms, the
generator cache, and the loaders of real weights (tiny random pipelines saved to a folder)."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from rd3_plugin_generative import d4m as d4m_entry
from rd3_plugin_generative import minimax as minimax_entry
from rd3_plugin_generative.algorithms import (
    add_gammas,
    kmeans,
    mark_trainable,
    memory_losses,
    new_memories,
    update_memories,
)
from rd3_plugin_generative.config import TINY_GENERATOR
from rd3_plugin_generative.generator import build_unet, obtain

from rd3_harness.testing import check_plugin, synthesize_smoke


def test_entry_modules_do_not_import_torch_or_diffusers():
    code = (
        "import sys, rd3_plugin_generative.d4m, rd3_plugin_generative.minimax;"
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name,module", [("d4m", d4m_entry), ("minimax", minimax_entry)])
def test_plugin_conforms(smoke_workspace, name, module):
    check_plugin(name, workspace=smoke_workspace, config=module.SMOKE_CONFIG)


@pytest.mark.parametrize("name,module", [("d4m", d4m_entry), ("minimax", minimax_entry)])
def test_smoke_run_records_the_generator(smoke_workspace, name, module):
    out = synthesize_smoke(smoke_workspace, name, **module.SMOKE_CONFIG)
    s, ipc = out.synset, smoke_workspace.protocol.ipc
    assert s.images.shape == (10 * ipc, 1, 28, 28)
    assert torch.equal(s.labels, torch.arange(10).repeat_interleave(ipc))
    assert torch.isfinite(s.images).all()
    gen = s.meta["generator"]
    assert len(gen["sha256"]) == 64 and gen["train_wall_s"] > 0 and gen["latent_shape"] == [4, 8, 8]
    assert out.manifest["synthesis"]["generator_wall_s"] >= 0


# ---------------------------------------------------------------------------------------------- D4M


def test_kmeans_finds_separated_clusters_and_is_a_lloyd_fixed_point():
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([m + 0.5 * torch.randn(50, 2, generator=g) for m in means])
    centres, assign = kmeans(x, 3, torch.Generator().manual_seed(1))
    # every centre is the mean of the points assigned to it, every point goes to its nearest centre
    for j in range(3):
        assert torch.allclose(centres[j], x[assign == j].mean(0), atol=1e-5)
    assert torch.equal(torch.cdist(x, centres).argmin(1), assign)
    # and the three true clusters are recovered
    assert sorted(torch.bincount(assign).tolist()) == [50, 50, 50]


def test_d4m_prototypes_are_the_kmeans_centres_of_the_class_latents(smoke_context):
    """With strength 0 nothing is denoised: the images are exactly the decoded k-means centres
    of each class's clean latents (k = ipc), so the prototypes are what D4M's gen_prototype makes."""
    from rd3_plugin_generative.methods import d4m

    cfg = d4m_entry.Config(**{**TINY_GENERATOR, "strength": 0.0})
    ctx = smoke_context(cfg)
    model = obtain(ctx, cfg)
    pixels, meta = d4m(ctx, cfg, model)
    ipc = ctx.ipc
    assert pixels.shape == (10 * ipc, 1, 28, 28)
    assert [sum(sizes) for sizes in meta["cluster_sizes"]] == [len(ctx.real_data.class_indices(c)) for c in range(10)]
    # redo class 0 by hand with the run's first draws: k-means of its clean latents, decoded
    ctx2 = smoke_context(cfg)
    z0 = model.encode(ctx2.real_data.raw(ctx2.real_data.class_indices(0)).float() / 255)
    centres, assign = kmeans(z0.flatten(1), ipc, ctx2.generator)
    for j in range(ipc):  # a Lloyd fixed point: each prototype is the mean latent of its cluster
        assert torch.allclose(centres[j], z0.flatten(1)[assign == j].mean(0), atol=1e-4)
    assert torch.allclose(pixels[:ipc], model.decode(centres.view(ipc, *z0.shape[1:])), atol=1e-5)


def test_d4m_strength_changes_the_prototypes(smoke_context):
    from rd3_plugin_generative.methods import d4m

    base = {**TINY_GENERATOR, "sample_steps": 4}
    cfg0, cfg1 = d4m_entry.Config(**base, strength=0.0), d4m_entry.Config(**base, strength=0.7)
    ctx = smoke_context(cfg0)
    model = obtain(ctx, cfg0)
    a, _ = d4m(ctx, cfg0, model)
    b, _ = d4m(smoke_context(cfg1), cfg1, model)
    assert not torch.allclose(a, b)


# ------------------------------------------------------------------------------------------ Minimax


def test_minimax_memory_losses_have_the_written_values():
    lr, ld = 0.002, 0.008
    real_mem, pseudo_mem = new_memories(64)
    real_mem[0].extend([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])])
    pseudo_mem[0].append(torch.tensor([0.0, 1.0]))
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    classes = torch.tensor([0, 0, 1])  # class 1 is in the batch (|C| = 2) but has no memory yet
    rep, div = memory_losses(pred, classes, real_mem, pseudo_mem, lr, ld)
    # class 0: cos(pred, M_0) = [[1, 1/sqrt2], [0, 1/sqrt2]] -> min 0 -> (1 - 0) * lr / 2
    assert rep.item() == pytest.approx(lr / 2)
    # cos(pred, D_0) = [[0], [1]] -> max 1 -> 1 * ld / 2
    assert div.item() == pytest.approx(ld / 2)
    # a second case: min cos = 1/sqrt2 with one class in the batch
    rep, div = memory_losses(
        pred[:1], classes[:1], {0: [torch.tensor([1.0, 1.0])]}, {0: [torch.tensor([1.0, 0.0])]}, lr, ld
    )
    assert rep.item() == pytest.approx((1 - 2**-0.5) * lr)
    assert div.item() == pytest.approx(ld)


def test_minimax_memories_are_fifo_of_the_memory_size():
    real_mem, pseudo_mem = new_memories(4)
    for step in range(3):
        x = torch.arange(6, dtype=torch.float32).view(3, 2) + 10 * step
        update_memories(x, -x, torch.tensor([0, 0, 1]), real_mem, pseudo_mem)
    assert len(real_mem[0]) == 4 and len(real_mem[1]) == 3
    assert [float(v[0]) for v in real_mem[0]] == [10.0, 12.0, 20.0, 22.0]
    assert [float(v[0]) for v in pseudo_mem[0]] == [-10.0, -12.0, -20.0, -22.0]
    assert not any(v.requires_grad for v in pseudo_mem[0])


def test_minimax_trains_only_biases_norms_gammas_and_the_class_embedding():
    unet = build_unet(10, 8, (16, 16))
    gated = add_gammas(unet)
    assert gated and all(n.endswith(("conv2", "to_out.0")) for n in gated)
    names = mark_trainable(unet)
    modules = dict(unet.named_modules())
    for name, p in unet.named_parameters():
        owner, leaf = name.rsplit(".", 1)
        expected = (
            leaf in ("bias", "gamma")
            or isinstance(modules[owner], (torch.nn.GroupNorm, torch.nn.LayerNorm))
            or owner == "class_embedding"
        )
        assert p.requires_grad == expected, name
    assert "class_embedding.weight" in names
    assert not unet.conv_in.weight.requires_grad
    trainable = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    assert 0 < trainable < 0.2 * sum(p.numel() for p in unet.parameters())
    # gamma = 1 leaves the network's function unchanged
    fresh = build_unet(10, 8, (16, 16))
    fresh.load_state_dict({k: v for k, v in unet.state_dict().items() if not k.endswith("gamma")})
    z, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 7]), torch.tensor([1, 10])
    with torch.no_grad():
        assert torch.allclose(unet(z, t, class_labels=y).sample, fresh(z, t, class_labels=y).sample, atol=1e-6)


def test_minimax_changes_the_samples(smoke_context):
    """Fine-tuning moves the EMA weights: the same draws give other images than the base model."""
    from rd3_plugin_generative.methods import base_samples, minimax

    cfg = minimax_entry.Config(**{**TINY_GENERATOR, "finetune_steps": 4, "batch_size": 8, "ema_decay": 0.0})
    ctx = smoke_context(cfg)
    model = obtain(ctx, cfg)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    pixels, meta = minimax(ctx, cfg, model)
    assert all(torch.equal(before[k], v) for k, v in model.unet.state_dict().items())  # the shared model is untouched
    assert 0 < meta["trainable_parameters"] < meta["total_parameters"]
    assert pixels.shape == (10 * ctx.ipc, 1, 28, 28)
    base = base_samples(model, 1, ctx.ipc, cfg.guidance, cfg.sample_steps, torch.Generator().manual_seed(0), ctx.device)
    assert base.shape == (ctx.ipc, 1, 28, 28)


# ----------------------------------------------------------------------------------------- generator


def test_generator_is_cached_by_key_and_checked_by_sha256(smoke_context):
    cfg = d4m_entry.Config(**TINY_GENERATOR)
    ctx = smoke_context(cfg)
    first = obtain(ctx, cfg)
    assert first.info["cache"] == "trained"
    second = obtain(smoke_context(cfg), cfg)
    assert second.info["cache"] == "hit" and second.info["sha256"] == first.info["sha256"]
    for (k, a), b in zip(first.unet.state_dict().items(), second.unet.state_dict().values()):
        assert torch.equal(a, b), k
    # another seed is another generator
    other = obtain(ctx, d4m_entry.Config(**TINY_GENERATOR, generator_seed=1))
    assert other.info["key"] != first.info["key"]
    # a damaged file is not used: it is retrained
    folder = ctx.cache_dir.parent / "generator" / first.info["key"][:24]
    (folder / "weights.pt").write_bytes(b"damaged")
    again = obtain(ctx, cfg)
    assert again.info["cache"] == "trained" and again.info["sha256"] == first.info["sha256"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["identity"]["dataset"] == "fashion-mnist" and meta["train_wall_s"] > 0


def test_sampling_reaches_latents_outside_minus_one_to_one(smoke_context):
    """Scaled latents have unit std, so DDIM must not clip its clean-latent estimate to [-1, 1]
    (diffusers' default for pixel-space models): a denoiser that always predicts the noise of a
    known clean latent must be sampled back to it, beyond 1 included."""
    cfg = d4m_entry.Config(**TINY_GENERATOR)
    model = obtain(smoke_context(cfg), cfg)
    target = torch.randn((2, *model.latent_shape), generator=torch.Generator().manual_seed(0)) * 2
    alphas = model.training_schedule().alphas_cumprod

    class Oracle(torch.nn.Module):
        def forward(self, z, timestep, class_labels):
            a = alphas[timestep.long()].view(-1, 1, 1, 1)
            clean = target.repeat(len(z) // len(target), 1, 1, 1)
            return SimpleNamespace(sample=(z - a.sqrt() * clean) / (1 - a).sqrt())

    labels, g = torch.tensor([0, 1]), torch.Generator().manual_seed(1)
    out = model.sample(labels, guidance=4.0, steps=20, generator=g, unet=Oracle())
    assert target.abs().max() > 2 and torch.allclose(out, target, atol=1e-4)
    start = model.sample(labels, guidance=8.0, steps=20, generator=g, unet=Oracle(), start=target * 0, strength=0.7)
    assert torch.allclose(start, target, atol=1e-4)  # img2img (D4M) takes the same path


# ------------------------------------------------------------------------------ real weights, offline


def _tiny_vae(in_channels=3):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )


def test_minimax_loads_a_local_dit_and_vae_offline(smoke_context, tmp_path, monkeypatch):
    from diffusers import DiTTransformer2DModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    folder = tmp_path / "dit"
    DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=12,
        norm_num_groups=1,
    ).save_pretrained(folder / "transformer")
    _tiny_vae().save_pretrained(folder / "vae")
    cfg = minimax_entry.Config(
        model_path=str(folder), finetune_steps=2, batch_size=4, sample_steps=2, class_ids=tuple(range(2, 12))
    )
    ctx = smoke_context(cfg)
    result = minimax_entry.synthesize(ctx)
    assert result.images.shape == (10 * ctx.ipc, 1, 28, 28) and torch.isfinite(result.images).all()
    assert result.meta["generator"]["latent_shape"] == [4, 8, 8]
    assert result.meta["trainable_parameters"] < result.meta["total_parameters"]


def _tiny_clip_tokenizer(folder):
    """A CLIP BPE tokenizer from a vocabulary written here: single characters only (no merges)."""
    from transformers import CLIPTokenizer

    chars = [chr(c) for c in range(33, 127)]
    vocab = {}
    for ch in chars:
        vocab[ch] = len(vocab)
    for ch in chars:
        vocab[ch + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77), len(vocab)


def test_d4m_loads_a_local_stable_diffusion_img2img_pipeline_offline(smoke_context, tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    tokenizer, vocab_size = _tiny_clip_tokenizer(tmp_path / "tok")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
            projection_dim=16,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    pipe = StableDiffusionImg2ImgPipeline(
        vae=_tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(  # SD 1.5's schedule settings
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(tmp_path / "sd")
    cfg = d4m_entry.Config(model_path=str(tmp_path / "sd"), sd_size=16, sample_steps=4, kmeans_pool=10)
    ctx = smoke_context(cfg)
    result = d4m_entry.synthesize(ctx)
    assert result.images.shape == (10 * ctx.ipc, 1, 28, 28) and torch.isfinite(result.images).all()
    assert result.meta["prompts"][0] == "T-shirt"


def test_model_path_must_be_a_local_folder(smoke_context, tmp_path):
    from rd3_harness import UsageError

    ctx = smoke_context(minimax_entry.Config(model_path=str(tmp_path / "missing")))
    with pytest.raises(UsageError, match="not a folder"):
        minimax_entry.synthesize(ctx)
