"""The dino backend: a ViT trained by DINO, patch features quantized VQ-KD style; BEiT-v2 weights."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from voc_rl.checkpoint import CheckpointError
from voc_rl.data import PixelDataset
from voc_rl.tokenizers import Tokenizer, make_tokenizer
from voc_rl.tokenizers.dino import DINOConfig, DINOTokenizer
from voc_rl.tokenizers.train import fit
from voc_rl.train_loop import Loop


@pytest.fixture
def tok() -> DINOTokenizer:
    return make_tokenizer("dino", "tiny")


def frames_of(ds: PixelDataset, n: int) -> np.ndarray:
    return np.array(ds.frames[:n])  # (n, 3, 64, 64) uint8, a writable copy


def test_config_and_presets(tok: DINOTokenizer) -> None:
    assert isinstance(tok.config, DINOConfig) and tok.backend == "dino" and not tok.has_decoder
    assert tok.tokens_per_frame == 64 and tok.vocab_size == 64 and tok.config.input_size == 64
    assert set(DINOTokenizer.presets) == {"tiny", "small", "base"}
    small = make_tokenizer("dino", "small")
    assert small.tokens_per_frame == 64 and small.config.dino_out_dim == 1024
    assert make_tokenizer("dino", "tiny", patch_size=16).tokens_per_frame == 16
    with pytest.raises(ValueError, match="divisible"):
        make_tokenizer("dino", "tiny", heads=3)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        make_tokenizer("dino", "tiny", local_size=20)


def test_multi_crop_views_and_sizes(tok: DINOTokenizer) -> None:
    x = torch.rand(5, 3, 64, 64)
    tok = make_tokenizer("dino", "tiny", local_crops=3)
    glob, local = tok.multi_crop(x)
    assert len(glob) == 2 and len(local) == 3
    assert all(v.shape == (5, 3, 64, 64) for v in glob) and all(v.shape == (5, 3, 32, 32) for v in local)
    assert all(float(v.min()) >= 0 and float(v.max()) <= 1 for v in glob + local)
    assert not torch.allclose(glob[0], glob[1]) and not torch.allclose(glob[0], x)
    assert tok.student(local[0] * 2 - 1).shape == (5, 1 + 16, 32)  # 4x4 patches, interpolated positions
    ramp = torch.linspace(0, 1, 64).expand(5, 3, 64, 64)  # brighter to the right
    crop = make_tokenizer("dino", "tiny", jitter=0.0)._crop(ramp, 32, (0.1, 0.4))
    assert (crop.diff(dim=-1) >= 0).all() and (crop.diff(dim=-1) > 0).any()  # never flipped
    assert (crop[..., -1] - crop[..., 0]).max() < 0.9  # a part of the frame, not all of it


def test_teacher_follows_student_by_ema_and_center_updates(tok: DINOTokenizer, ds: PixelDataset) -> None:
    assert all(
        torch.equal(a, b) for a, b in zip(tok.teacher.parameters(), tok.student.parameters(), strict=True)
    )
    assert tok.momentum(-1) == pytest.approx(0.996) and tok.momentum(tok.config.steps - 1) == 1.0
    opt = torch.optim.AdamW([p for p in tok.parameters() if p.requires_grad], lr=1e-2)
    batch = tok.sample_batch(ds, np.arange(100), np.random.default_rng(0))
    tok.train()
    for _ in range(3):
        before = [p.clone() for p in tok.teacher.parameters()]
        center = tok.center.clone()
        loss, logs, codes = tok.loss(batch)
        assert not torch.equal(tok.center, center)  # the centre moved towards the teacher's outputs
        assert codes.shape == (8, 64) and {"dino", "vqkd_rec", "commitment"} <= set(logs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        m = tok.momentum(tok.step)
        tok.after_step()
        tok.step += 1
        for old, t, s in zip(before, tok.teacher.parameters(), tok.student.parameters(), strict=True):
            torch.testing.assert_close(t, m * old + (1 - m) * s)
    assert any(
        not torch.equal(t, s) for t, s in zip(tok.teacher.parameters(), tok.student.parameters(), strict=True)
    )
    assert all(not p.requires_grad for p in [*tok.teacher.parameters(), *tok.teacher_head.parameters()])
    center = tok.center.clone()
    tok.eval().loss(batch)
    assert torch.equal(tok.center, center)  # evaluation leaves the centre alone


def test_training_lowers_both_losses(tok: DINOTokenizer, ds: PixelDataset) -> None:
    batch = tok.sample_batch(ds, np.arange(100), np.random.default_rng(0))
    opt = torch.optim.AdamW([p for p in tok.parameters() if p.requires_grad], lr=1e-3)
    tok.train()
    history = []
    for _ in range(40):
        torch.manual_seed(1)  # the same crops each step: the student must fit the (slow) teacher
        loss, logs, _ = tok.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tok.after_step()
        tok.step += 1
        history.append([float(loss.detach()), logs["dino"], logs["vqkd_rec"]])
    first, last = np.mean(history[:5], axis=0), np.mean(history[-5:], axis=0)
    assert np.all(last < 0.8 * first), (first, last)  # total, DINO and VQ-KD reconstruction


def test_fit_evaluates_and_round_trips(ds: PixelDataset, tmp_path: Path) -> None:
    tok = make_tokenizer("dino", "tiny")
    report = fit(tok, ds, steps=30, loop=Loop(tmp_path / "run", progress=False))
    assert {"usage", "perplexity", "probe_r2", "encode_fps"} <= set(report.metrics)
    assert report.metrics["usage"] > 0.05 and np.isfinite(report.final_loss)  # the codebook is alive
    frames = frames_of(ds, 6).reshape(2, 3, 3, 64, 64)
    loaded = Tokenizer.load(tmp_path / "run" / "tokenizer.pt", backend="dino")
    assert isinstance(loaded, DINOTokenizer) and loaded.config == tok.config and loaded.step == 30
    assert loaded.config.global_scale == (0.4, 1.0)  # tuples survive the checkpoint
    assert torch.equal(loaded.encode(frames), tok.encode(frames))
    for (k, a), (_, b) in zip(tok.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


# ---------------------------------------------------------------------- BEiT-v2 VQ-KD checkpoints
WIDTH, DEPTH, HEADS, PATCH, SIZE, CODES, CODE_DIM = 32, 2, 2, 8, 32, 16, 8


def beit_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the key layout of BEiT v2's VQKD (modeling_vqkd.py, use_mean_pooling=True)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def m(*shape: int) -> torch.Tensor:  # a block's matrix: small, so that patches stay apart
        return r(*shape, scale=0.05)

    w, n = WIDTH, (SIZE // PATCH) ** 2
    sd = {
        "encoder.cls_token": r(1, 1, w),
        "encoder.pos_embed": r(1, n + 1, w),
        "encoder.patch_embed.proj.weight": r(w, 3, PATCH, PATCH, scale=0.1),
        "encoder.patch_embed.proj.bias": r(w),
    }
    for i in range(DEPTH):
        p = f"encoder.blocks.{i}."
        sd |= {p + "norm1.weight": 1 + r(w), p + "norm1.bias": r(w), p + "attn.q_bias": r(w)}
        sd |= {p + "attn.v_bias": r(w), p + "attn.qkv.weight": m(3 * w, w), p + "attn.proj.weight": m(w, w)}
        sd |= {p + "attn.proj.bias": r(w), p + "norm2.weight": 1 + r(w), p + "norm2.bias": r(w)}
        sd |= {p + "mlp.fc1.weight": m(4 * w, w), p + "mlp.fc1.bias": r(4 * w)}
        sd |= {p + "mlp.fc2.weight": m(w, 4 * w), p + "mlp.fc2.bias": r(w)}
    sd |= {"encoder.fc_norm.weight": 1 + r(w), "encoder.fc_norm.bias": r(w)}
    sd |= {"encode_task_layer.0.weight": r(w, w), "encode_task_layer.0.bias": r(w)}
    sd |= {"encode_task_layer.2.weight": r(CODE_DIM, w), "encode_task_layer.2.bias": r(CODE_DIM)}
    sd["quantize.embedding.weight"] = F.normalize(r(CODES, CODE_DIM), dim=-1)
    sd |= {"quantize.embedding.cluster_size": r(CODES), "quantize.embedding.embed_avg": r(CODES, CODE_DIM)}
    sd |= {"quantize.embedding.initted": torch.tensor([1.0]), "quantize.cluster_size": r(CODES)}
    sd |= {"decoder.cls_token": r(1, 1, w), "decoder.blocks.0.attn.qkv.weight": r(3 * w, w)}
    sd |= {"decode_task_layer.2.weight": r(48, w), "teacher_model.head.weight": r(4, w)}
    return sd


def reference_tokens(sd: dict[str, torch.Tensor], frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """What BEiT v2's VQKD.get_tokens computes, written out from the raw tensors: (features, codes)."""
    x = torch.from_numpy(frames).float() / 255
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1
    w = sd["encoder.patch_embed.proj.weight"]
    x = F.conv2d(x, w, sd["encoder.patch_embed.proj.bias"], stride=PATCH).flatten(2).transpose(1, 2)
    x = torch.cat([sd["encoder.cls_token"].expand(len(x), -1, -1), x], dim=1) + sd["encoder.pos_embed"]
    b, n, d = x.shape
    for i in range(DEPTH):
        p = f"encoder.blocks.{i}."

        def ln(t: torch.Tensor, name: str, p: str = p) -> torch.Tensor:
            return F.layer_norm(t, (d,), sd[p + name + ".weight"], sd[p + name + ".bias"], eps=1e-6)

        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(d), sd[p + "attn.v_bias"]])
        qkv = F.linear(ln(x, "norm1"), sd[p + "attn.qkv.weight"], bias)
        q, k, v = qkv.reshape(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        attn = ((q * (d // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        x = x + F.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.gelu(F.linear(ln(x, "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    t = F.layer_norm(x[:, 1:], (d,), sd["encoder.fc_norm.weight"], sd["encoder.fc_norm.bias"], eps=1e-6)
    t = torch.tanh(F.linear(t, sd["encode_task_layer.0.weight"], sd["encode_task_layer.0.bias"]))
    z = F.normalize(F.linear(t, sd["encode_task_layer.2.weight"], sd["encode_task_layer.2.bias"]), dim=-1)
    e = sd["quantize.embedding.weight"]
    dist = z.pow(2).sum(-1, keepdim=True) + e.pow(2).sum(-1) - 2 * z @ e.T
    return z, dist.argmin(dim=-1)  # (M, N, d), (M, N)


def test_beit_vqkd_checkpoint_reproduces_the_original_tokens(ds: PixelDataset, tmp_path: Path) -> None:
    sd = beit_state()
    path = tmp_path / "vqkd.pth"
    torch.save({"model": sd, "epoch": 3, "args": argparse.Namespace(lr=1e-4)}, path)
    tok = DINOTokenizer.from_beit_vqkd(path, heads=HEADS)
    c = tok.config
    assert (c.width, c.depth, c.patch_size, c.input_size, c.mlp_ratio) == (WIDTH, DEPTH, PATCH, SIZE, 4.0)
    assert (c.vocab_size, c.code_dim, c.encoder_only, tok.tokens_per_frame) == (CODES, CODE_DIM, True, 16)
    frames = frames_of(ds, 12)
    z, expected = reference_tokens(sd, frames)
    assert len(expected.unique()) > 3  # random weights still spread the patches over codes
    with torch.no_grad():  # the features before the lookup, which tell more than argmin does
        x = torch.from_numpy(frames).float() / 255
        torch.testing.assert_close(F.normalize(tok.vq_head(tok._patch_features(x)), dim=-1), z)
    tokens = tok.encode(frames.reshape(4, 3, 3, 64, 64))
    assert tokens.shape == (4, 3 * 16)
    assert torch.equal(tokens.reshape(12, 16), expected)
    torch.save(sd, tmp_path / "bare.pth")  # a bare state dict loads as well, to the same tokens
    assert torch.equal(
        DINOTokenizer.from_beit_vqkd(tmp_path / "bare.pth", heads=HEADS).encode(frames),
        tokens.reshape(12, 16),
    )
    with pytest.raises(RuntimeError, match="cannot be trained"):
        tok.loss({"frames": torch.rand(2, 3, 64, 64)})
    loaded = Tokenizer.load(tok.save(tmp_path / "mine.pt"))  # saved in voc_rl's own format
    assert torch.equal(loaded.encode(frames), tokens.reshape(12, 16))


def test_beit_vqkd_checkpoint_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        DINOTokenizer.from_beit_vqkd(tmp_path / "missing.pth")

    def attempt(sd: dict[str, torch.Tensor], match: str) -> None:
        torch.save({"model": sd}, tmp_path / "bad.pth")
        with pytest.raises(CheckpointError, match=match):
            DINOTokenizer.from_beit_vqkd(tmp_path / "bad.pth", heads=HEADS)

    sd = beit_state()
    sd["encoder.blocks.1.mlp.fc1.weight"] = sd["encoder.blocks.1.mlp.fc1.weight"][:-1]
    attempt(sd, r"encoder\.blocks\.1\.mlp\.fc1\.weight has shape \(127, 32\), expected \(128, 32\)")
    sd = beit_state()
    del sd["encoder.blocks.1.norm2.bias"]
    attempt(sd, r"lacks the weights for \['teacher\.blocks\.1\.norm2\.bias'\]")
    sd = beit_state()
    sd["encoder.blocks.0.gamma_1"] = torch.ones(WIDTH)  # layer scale: not in this architecture
    attempt(sd, r"cannot use: \['encoder\.blocks\.0\.gamma_1'\]")
    attempt({"encoder.cls_token": torch.zeros(1, 1, 8)}, "not a BEiT-v2 VQ-KD checkpoint")
    sd = beit_state()
    sd["encoder.norm.weight"] = sd["encoder.fc_norm.weight"]
    attempt(sd, "both load into teacher.norm.weight")
    torch.save({"model": beit_state(), "fn": F.relu}, tmp_path / "unsafe.pth")  # pickled code
    with pytest.raises(CheckpointError, match="could run code"):
        DINOTokenizer.from_beit_vqkd(tmp_path / "unsafe.pth")
