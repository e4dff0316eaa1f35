"""The pixel trunk of the control heads: a convolutional encoder of the raw frame stack, trained end
to end with random-shift augmentation, which the pixel prior (:mod:`voc_rl.pixel_policy`) and the
offline-RL critics (:mod:`voc_rl.offline_rl`) read. The occupancy model keeps the tokens.

Why pixels: a policy needs the body's exact configuration, which 16 codes a frame do not keep
(cloning the expert's episodes from them reaches 0.08x of its return on walker-walk), while a small
CNN on the stack with random shifts reaches 0.90x (``shared/FACTS.md``, "Behaviour cloning from
pixels"). :class:`PixelEncoder` is that measured CNN (the V-D4RL / DrQ recipe, one conv layer fewer):
``x / 255 - 0.5``, convolutions of 32-64-64 channels (kernels 4/4/3, stride 2, no padding: 64 px
-> 31 -> 14 -> 6), Linear to ``feature_dim``, LayerNorm, Tanh. :func:`random_shift` pads by
replication and crops back at a random integer offset per image (DrQ; training only), on the uint8
frames before they become floats (:func:`unit_pixels`).
``encoder="vqvae"`` swaps it for :class:`VQVAEFrameEncoder`, the VQ-VAE tokenizer's own encoder on each
frame, which :func:`init_from_tokenizer` starts from a trained tokenizer: within noise of the conv
encoder at equal steps on cheetah-run, at 4-6x the cost of a step (``results/perception_encoder/``).

:func:`pixel_batch` reads uint8 frame stacks (and actions, rewards, next stacks) at flat frame
indices; :func:`voc_rl.token_trunk.fit_token_model` trains pixel models in the shared loop with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from voc_rl.control_model import ControlModel
from voc_rl.data.dataset import PixelDataset, TokenView
from voc_rl.presets import from_preset
from voc_rl.token_trunk import window_starts
from voc_rl.typed import check_fields

EVAL_STATES = 1024  # held-out states a pixel model is scored on (uint8 in memory: 37 MB at 64 px)
EVAL_CHUNK = 256  # of them per forward pass
C = TypeVar("C", bound="PixelModelConfig")


@dataclass(frozen=True)
class PixelModelConfig:
    """Fields every pixel model shares: the input geometry, the encoder, the MLP and the optimiser."""

    action_dim: int
    image_size: int = 64
    frame_stack: int = 3
    channels: int = 32  # the first conv's; the next two have twice as many
    feature_dim: int = 256  # the encoder's output (Linear -> LayerNorm -> Tanh)
    hidden: int = 256  # width of the head's two hidden layers
    shift: int = 4  # random-shift padding in pixels (0: no augmentation)
    lr: float = 3e-4  # AdamW; 100 warm-up steps, then cosine to 10% over ``steps``
    weight_decay: float = 0.0
    batch_size: int = 128
    # walker-walk's expert episodes: 0.58x of the expert's return at 6k steps, 0.90x at 15k (FACTS.md)
    steps: int = 15_000
    # weight of an auxiliary target in training only: a linear head regresses the recorded
    # proprioceptive state (standardised) from the encoder's features; the model still acts from pixels
    state_aux: float = 0.0
    state_dim: int = 0  # that state's size, from the dataset (for_dataset sets it when state_aux > 0)
    # "conv": PixelEncoder; "vqvae": the VQ-VAE tokenizer's encoder on each frame (VQVAEFrameEncoder),
    # which init_from_tokenizer can load from a trained tokenizer of the same geometry
    encoder: str = "conv"
    vqvae_channels: int = 64  # that encoder's geometry (the agents' vqvae: small preset, 4x4 codes)
    vqvae_downsample: int = 4
    vqvae_code_dim: int = 32

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"channels": 4, "feature_dim": 16, "hidden": 32, "batch_size": 16, "steps": 40},
        "small": {},  # the measured recipe (batch 128): results/pixel_speed.md times its step
        "base": {"batch_size": 256, "steps": 30_000},
    }

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("action_dim", "image_size", "frame_stack", "channels", "feature_dim", "hidden",
                     "batch_size", "steps"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 (three stride-2 convolutions), got {self.image_size}")
        if not isinstance(self.shift, int) or not 0 <= self.shift < self.image_size // 2:
            raise ValueError(f"shift must be an integer in [0, image_size / 2), got {self.shift!r}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose from {', '.join(ENCODERS)}")
        if self.encoder == "vqvae" and self.image_size % 2**self.vqvae_downsample:
            raise ValueError(f"image_size {self.image_size} is not divisible by 2^vqvae_downsample")
        if not self.state_aux >= 0 or (self.state_aux > 0 and self.state_dim < 1):
            raise ValueError(f"need state_aux >= 0, and state_dim >= 1 where it is > 0; got "
                             f"{self.state_aux}, {self.state_dim}")  # fmt: skip

    @classmethod
    def preset(cls: type[C], size: str, **fields: Any) -> C:
        return from_preset(cls, cls.presets, size, fields, cls.__name__)

    @classmethod
    def for_dataset(cls: type[C], ds: PixelDataset, size: str = "small", **fields: Any) -> C:
        """The ``size`` preset with the pixel dataset's frame size and action size (and the size of its
        recorded state where ``state_aux > 0``), then ``fields``."""
        if isinstance(ds, TokenView) or ds.frames.ndim != 4:
            raise ValueError("a pixel model reads a pixel dataset's frames, not a token view")
        geometry = {"image_size": int(ds.frames.shape[-1]), "action_dim": int(ds.arrays["action"].shape[1])}
        if fields.get("state_aux", 0) > 0:
            if "proprio" not in ds.arrays:
                raise ValueError(f"state_aux needs the proprioceptive state, which {ds.path} did not record; "
                                 "collect the dataset with `voc-rl collect`, or set state_aux=0")  # fmt: skip
            geometry["state_dim"] = int(ds.arrays["proprio"].shape[1])
        return cls.preset(size, **{**geometry, **fields})


def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image of ``x`` (B, C, H, W), of any dtype, padded by ``pad`` pixels (replicating the
    border) and cropped back to (H, W) at a random integer offset per image (torch's global
    generator). One ``gather`` of clamped indices into the unpadded images, which is the replicated
    padding without building it; the encoders shift the uint8 frames, before they become floats."""
    if pad == 0:
        return x
    b, c, h, w = x.shape
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1, 1), device=x.device)
    rows = (dy - pad + torch.arange(h, device=x.device)[:, None]).clamp_(0, h - 1)  # (B, H, 1)
    cols = (dx - pad + torch.arange(w, device=x.device)).clamp_(0, w - 1)  # (B, 1, W)
    flat = (rows * w + cols).reshape(b, 1, h * w).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, flat).reshape(b, c, h, w)


def unit_pixels(obs: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 images -> float ``obs / 255 - 0.5``, in place after one conversion (the large
    temporaries of a batch cost more than its arithmetic on a CPU), optionally channels-last."""
    if channels_last:
        obs = obs.contiguous(memory_format=torch.channels_last)  # (a uint8 copy: a quarter of a float's)
    return obs.float().mul_(1.0 / 255.0).sub_(0.5)


class PixelEncoder(nn.Module):
    """uint8 frame stacks (B, 3F, H, W) -> features (B, feature_dim) in [-1, 1]."""

    def __init__(self, config: PixelModelConfig):
        super().__init__()
        c, ch = config, config.channels
        self.convs = nn.Sequential(
            nn.Conv2d(3 * c.frame_stack, ch, 4, stride=2), nn.ReLU(),
            nn.Conv2d(ch, 2 * ch, 4, stride=2), nn.ReLU(),
            nn.Conv2d(2 * ch, 2 * ch, 3, stride=2), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        with torch.no_grad():
            n = self.convs(torch.zeros(1, 3 * c.frame_stack, c.image_size, c.image_size)).shape[1]
        self.out = nn.Sequential(nn.Linear(n, c.feature_dim), nn.LayerNorm(c.feature_dim), nn.Tanh())
        self.shift = c.shift
        self.convs.to(memory_format=torch.channels_last)  # 1.5x faster convolutions on a CPU

    def forward(self, obs: torch.Tensor, augment: bool = False) -> torch.Tensor:
        if augment:
            obs = random_shift(obs, self.shift)
        return self.out(self.convs(unit_pixels(obs, channels_last=True)))


class VQVAEFrameEncoder(nn.Module):
    """uint8 frame stacks (B, 3F, H, W) -> features (B, feature_dim) in [-1, 1] through the VQ-VAE
    tokenizer's own encoder (``frames``: its stride-2 convolutions, residual block and 1x1 projection,
    the layers before quantization) applied to each frame, the F maps of latents concatenated, then
    Linear, LayerNorm, Tanh. Random shifts move the whole stack, as :class:`PixelEncoder`'s do."""

    def __init__(self, config: PixelModelConfig):
        super().__init__()
        from voc_rl.tokenizers.vqvae import frame_encoder

        c = config
        self.frames = frame_encoder(c.vqvae_channels, c.vqvae_downsample, c.vqvae_code_dim)
        grid = c.image_size // 2**c.vqvae_downsample
        n = c.frame_stack * c.vqvae_code_dim * grid * grid
        self.out = nn.Sequential(nn.Linear(n, c.feature_dim), nn.LayerNorm(c.feature_dim), nn.Tanh())
        self.shift = c.shift

    def forward(self, obs: torch.Tensor, augment: bool = False) -> torch.Tensor:
        if augment:
            obs = random_shift(obs, self.shift)
        b, f3, h, w = obs.shape
        z = self.frames(unit_pixels(obs.reshape(b * f3 // 3, 3, h, w)).mul_(2.0))  # the tokenizer's scale
        return self.out(z.reshape(b, -1))


def init_from_tokenizer(model: PixelModel, tokenizer: Any) -> PixelModel:
    """Load a trained VQ-VAE tokenizer's encoder (the layers before quantization) into ``model``'s
    :class:`VQVAEFrameEncoder`, which then trains on from there; ``model`` returned."""
    if not isinstance(model.encoder, VQVAEFrameEncoder):
        raise ValueError(f"the model's encoder is {model.config.encoder!r}; set encoder='vqvae' to load a "
                         "tokenizer's encoder into it")  # fmt: skip
    backend = getattr(tokenizer, "backend", type(tokenizer).__name__)
    if backend != "vqvae":
        raise ValueError(f"only a vqvae tokenizer's encoder fits the pixel encoder, got {backend!r}")
    tc, c = tokenizer.config, model.config
    if tc.input_frames != 1:
        raise ValueError(f"the tokenizer's encoder reads {tc.input_frames} frames for a frame's codes; "
                         "the pixel encoder reads one: use a tokenizer with input_frames=1")  # fmt: skip
    got = (tc.channels, tc.downsample, tc.code_dim, tc.image_size)
    want = (c.vqvae_channels, c.vqvae_downsample, c.vqvae_code_dim, c.image_size)
    if got != want:
        raise ValueError(f"the tokenizer's (channels, downsample, code_dim, image_size) {got} do not match "
                         f"the model's vqvae_* fields and image_size {want}")  # fmt: skip
    model.encoder.frames.load_state_dict(tokenizer.encoder.state_dict())
    return model


ENCODERS: dict[str, type[nn.Module]] = {"conv": PixelEncoder, "vqvae": VQVAEFrameEncoder}


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    """The heads' MLP: two hidden layers of ``hidden`` with ReLU."""
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out))  # fmt: skip


class PixelModel(ControlModel):
    """A pixel encoder and whatever heads a subclass adds; input checks and checkpoints."""

    def __init__(self, config: PixelModelConfig):
        super().__init__(config)
        self.encoder = ENCODERS[config.encoder](config)
        if config.state_aux > 0:  # training only; standardisation fixed by standardised_state
            self.state_head = nn.Linear(config.feature_dim, config.state_dim)
            self.register_buffer("state_mean", torch.zeros(config.state_dim))
            self.register_buffer("state_std", torch.ones(config.state_dim))

    def state_error(self, features: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Per row: the auxiliary head's squared error to the standardised ``state`` (mean over dims)."""
        return (self.state_head(features) - state).pow(2).mean(-1)

    @property
    def device(self) -> torch.device:
        return self.encoder.out[0].weight.device

    def check_context(self, obs: Any) -> torch.Tensor:
        """uint8 frame stacks (B, 3F, H, W) on the model's device (the name is the token models')."""
        c, obs = self.config, torch.as_tensor(obs)
        if obs.dtype != torch.uint8:
            raise TypeError(f"a pixel model reads uint8 frame stacks, got {obs.dtype}")
        shape = (3 * c.frame_stack, c.image_size, c.image_size)
        if obs.ndim != 4 or tuple(obs.shape[1:]) != shape or len(obs) == 0:
            raise ValueError(f"obs must be (B, {', '.join(map(str, shape))}) uint8 with B >= 1, "
                             f"got {tuple(obs.shape)}")  # fmt: skip
        return obs.to(self.device)

    def __repr__(self) -> str:
        c, n = self.config, sum(p.numel() for p in self.parameters())
        return (f"{type(self).__name__}({3 * c.frame_stack}x{c.image_size}x{c.image_size} pixels, "
                f"{c.action_dim}-d actions, {n / 1e6:.2f}M params)")  # fmt: skip


def pixel_batch(ds: PixelDataset, index: np.ndarray, frame_stack: int, device: torch.device, nxt: bool
                ) -> dict[str, torch.Tensor]:  # fmt: skip
    """uint8 frame stacks (``obs``), ``action`` at flat frame indices ``index``; with ``nxt`` also
    ``reward``, ``next_obs``, ``next_action`` and ``next_terminal`` (as :func:`token_batch`)."""
    a = ds.arrays
    if not nxt:
        obs = ds.stacks(index, frame_stack)
        return {
            "obs": torch.from_numpy(obs).to(device),
            "action": torch.from_numpy(a["action"][index]).to(device),
        }
    stacks = torch.from_numpy(ds.stacks(np.stack([index, index + 1], 1), frame_stack)).to(device)
    rest = {"action": a["action"][index], "reward": a["reward"][index], "next_action": a["action"][index + 1],
            "next_terminal": a["is_terminal"][index + 1]}  # fmt: skip
    return {"obs": stacks[:, 0], "next_obs": stacks[:, 1], **{k: torch.from_numpy(np.asarray(v)).to(device)
                                                              for k, v in rest.items()}}  # fmt: skip


def standardised_state(model: PixelModel, ds: PixelDataset, episodes: np.ndarray) -> torch.Tensor:
    """The dataset's recorded ``proprio`` (every frame, on ``model``'s device) standardised by the
    statistics of ``episodes``' frames, which ``model`` keeps in its buffers: the target of
    ``state_aux``."""
    if "proprio" not in ds.arrays:
        raise ValueError(f"state_aux needs the proprioceptive state, which {ds.path} did not record")
    proprio = torch.from_numpy(np.asarray(ds.arrays["proprio"], np.float32)).to(model.device)
    if proprio.shape[1] != model.config.state_dim:
        raise ValueError(f"the model's state_dim is {model.config.state_dim}; {ds.path} records "
                         f"{proprio.shape[1]} state dimensions")  # fmt: skip
    rows = torch.from_numpy(window_starts(ds, episodes, False)).to(model.device)
    model.state_mean.copy_(proprio[rows].mean(0))
    model.state_std.copy_(proprio[rows].std(0) + 1e-6)
    return (proprio - model.state_mean) / model.state_std


def chunked(fn: Any, *tensors: torch.Tensor, chunk: int = EVAL_CHUNK) -> Any:
    """``fn`` over ``chunk`` rows of ``tensors`` at a time, outputs concatenated (a tensor or a tuple)."""
    outs = [fn(*(t[i : i + chunk] for t in tensors)) for i in range(0, len(tensors[0]), chunk)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
    return torch.cat(outs)
