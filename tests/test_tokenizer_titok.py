"""The titok backend: a 1-D tokenizer, K latent tokens per frame (tiny preset, fake-pixels data)."""

import numpy as np
import pytest
import torch
from checks import QUIET

from voc_rl.tokenizers import Tokenizer, make_tokenizer
from voc_rl.tokenizers.titok import TiTokConfig, TiTokTokenizer
from voc_rl.tokenizers.train import fit


@pytest.fixture
def tok() -> TiTokTokenizer:
    torch.manual_seed(0)
    return make_tokenizer("titok", "tiny")


def frames_of(ds, n: int) -> np.ndarray:
    return np.array(ds.frames[:n])  # (n, 3, 64, 64) uint8, a writable copy


def test_registry_and_config(tok):
    assert isinstance(tok, TiTokTokenizer) and tok.backend == "titok"
    assert isinstance(tok.config, TiTokConfig)
    assert tok.tokens_per_frame == 8 and tok.vocab_size == 64
    assert set(TiTokTokenizer.presets) == {"tiny", "small", "base"}
    with pytest.raises(ValueError, match="divisible"):
        make_tokenizer("titok", "tiny", width=30, heads=4)
    with pytest.raises(ValueError, match="patch_size"):
        make_tokenizer("titok", "tiny", patch_size=6)


def test_patchify_roundtrip(tok):
    x = torch.rand(2, 3, 64, 64)
    patches = tok._patchify(x)
    assert patches.shape == (2, 64, 8 * 8 * 3)
    assert torch.equal(patches[0, 1], x[0, :, 0:8, 8:16].permute(1, 2, 0).reshape(-1))  # row-major patches
    assert torch.equal(tok._unpatchify(patches), x)


def test_shapes_and_dtypes(tok, ds):
    frames = torch.from_numpy(frames_of(ds, 6).reshape(2, 3, 3, 64, 64))  # (B, F, 3, H, W)
    tokens = tok.encode(frames)
    assert tokens.dtype == torch.long and tokens.shape == (2, 3 * 8)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < tok.vocab_size
    emb = tok.embed(tokens)
    assert emb.dtype == torch.float32 and emb.shape == (2, 24, 16)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2, 24))
    recon = tok.decode(tokens)
    assert recon.dtype == torch.uint8 and recon.shape == (2, 3, 3, 64, 64)


def test_tokens_per_frame_independent_of_content(tok):
    k = tok.config.num_latent_tokens
    for fill in (0, 255):
        frames = torch.full((3, 3, 64, 64), fill, dtype=torch.uint8)
        assert tok.encode(frames).shape == (3, k)
    noise = torch.randint(0, 256, (5, 2, 3, 64, 64), dtype=torch.uint8)
    assert tok.encode(noise).shape == (5, 2 * k)
    assert tok.tokens_per_frame == k


def test_encoding_deterministic_in_eval(tok, ds):
    frames = frames_of(ds, 10)
    tok.eval()
    first = tok.encode(frames)
    assert torch.equal(first, tok.encode(frames))
    assert torch.equal(first[:4], tok.encode(frames[:4], chunk=3))  # independent of batching


def test_num_latent_tokens_sets_width(ds):
    frames = frames_of(ds, 4)
    for k in (4, 8, 12):
        tok = make_tokenizer("titok", "tiny", num_latent_tokens=k)
        assert tok.tokens_per_frame == k
        tokens = tok.encode(frames)
        assert tokens.shape == (4, k)
        assert tok.decode(tokens).shape == (4, 1, 3, 64, 64)
        assert tok.latent_tokens.shape[1] == k


def test_untrained_decoder_outputs_the_mean_frame(tok, ds):
    x = torch.from_numpy(frames_of(ds, 32)).float() / 255
    tok._remember(x)  # what the first training batch does
    mean = x.mean(0)
    with torch.no_grad():
        recon = tok.decode_frames(torch.randint(0, tok.vocab_size, (4, 8)))  # (4, 3, 64, 64)
    assert float((recon - mean).abs().mean()) < 0.02  # small untrained logits, and the 0.01 clamp
    assert (tok._mean_frame()[0] - mean).abs().max() < 1 / 255


def test_training_lowers_loss(tok, ds):
    rng = np.random.default_rng(0)
    train = ds.frame_index(np.arange(ds.num_episodes))
    opt = torch.optim.AdamW(tok.parameters(), lr=2e-3)
    tok.train()
    losses = []
    for _ in range(60):
        loss, logs, codes = tok.loss(tok.sample_batch(ds, train, rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        assert set(logs) == {"recon_mse", "commitment"} and codes.shape == (16, 8)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    codes = tok.encode(
        np.array(ds.frames[train[::4][:32]])
    )  # (32, K): frames with the square in different places
    distinct_per_slot = [len(torch.unique(codes[:, k])) for k in range(codes.shape[1])]
    assert np.mean(distinct_per_slot) > 1.5, f"codes barely depend on the frame: {distinct_per_slot}"


def test_fit_runs_and_evaluates(tok, ds):
    report = fit(tok, ds, steps=20, loop=QUIET)
    assert report.steps == 20 and np.isfinite(report.final_loss)
    m = report.metrics
    assert m["tokens_per_frame"] == 8 and 0 < m["usage"] <= 1 and "psnr" in m and "probe_r2" in m


def test_reference_statistics_follow_the_weights(tok, ds, tmp_path):
    fit(tok, ds, steps=5, loop=QUIET)
    assert int(tok.ref_count) == tok.config.num_ref_frames  # kept from the first training batches
    frames = frames_of(ds, 16)
    tok.encode(frames)  # caches the reference statistics
    with torch.no_grad():
        tok.to_code.weight.mul_(-1.0)  # an in-place change, as an optimiser step makes
    after = tok.encode(frames)
    fresh = Tokenizer.load(tok.save(tmp_path / "changed.pt")).encode(frames)  # computes them anew
    assert torch.equal(after, fresh)


def test_save_load_roundtrip(tok, ds, tmp_path):
    fit(tok, ds, steps=5, loop=QUIET)
    frames = frames_of(ds, 8)
    path = tok.save(tmp_path / "titok.pt")
    loaded = Tokenizer.load(path, backend="titok")
    assert isinstance(loaded, TiTokTokenizer) and loaded.config == tok.config and loaded.step == 5
    assert torch.equal(loaded.encode(frames), tok.encode(frames))
    a, b = tok.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_float_frames_rejected(tok):
    with pytest.raises(TypeError, match="uint8"):
        tok.encode(torch.rand(2, 3, 64, 64))


def test_wrong_frame_shape_rejected(tok):
    with pytest.raises(ValueError, match="frames must be"):
        tok.encode(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_empty_batch_rejected(tok):
    with pytest.raises(ValueError, match="empty"):
        tok.encode(torch.zeros(0, 3, 64, 64, dtype=torch.uint8))


def test_out_of_range_tokens_rejected(tok):
    with pytest.raises(ValueError, match="token ids"):
        tok.embed(torch.full((1, 8), tok.vocab_size))
    with pytest.raises(ValueError, match="token ids"):
        tok.decode(torch.full((1, 8), -1))
