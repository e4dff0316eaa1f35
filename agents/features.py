"""voc_rl tokens under any stable-baselines3 algorithm: a ``BaseFeaturesExtractor``.

    from stable_baselines3 import SAC
    from voc_rl.agents import TokenFeatures

    SAC("CnnPolicy", env, policy_kwargs={"features_extractor_class": TokenFeatures,
        "features_extractor_kwargs": {"tokenizer": "runs/.../tokenizer.pt"}})

The tokenizer is frozen: each stacked observation becomes its token ids, then their (unit-norm)
code vectors, and a trained linear layer maps them to ``features_dim`` features.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from voc_rl.tokenizers import Tokenizer


class TokenFeatures(BaseFeaturesExtractor):
    def __init__(
        self, observation_space: gym.spaces.Box, tokenizer: str | Path | Tokenizer, features_dim: int = 256
    ):
        tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.load(tokenizer)
        shape, size = tuple(observation_space.shape), tok.config.image_size
        if len(shape) != 3 or shape[0] % 3 or shape[1:] != (size, size):
            raise ValueError(
                f"TokenFeatures needs stacked RGB frames (3F, {size}, {size}) for this tokenizer; "
                f"the observation space is {shape}"
            )
        super().__init__(observation_space, features_dim)
        self.frames, self.size = shape[0] // 3, size
        self.tokenizer = tok.eval().requires_grad_(False)
        code_dim = tok.embed(torch.zeros(1, tok.tokens_per_frame, dtype=torch.long)).shape[-1]
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(self.frames * tok.tokens_per_frame * code_dim, features_dim), nn.ReLU()
        )

    def train(self, mode: bool = True) -> TokenFeatures:
        super().train(mode)
        self.tokenizer.eval()  # frozen: batch-norm statistics and dropout stay as trained
        return self

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations.float()
        if x.max() > 1.0:  # stable-baselines3 scales images to [0, 1] unless normalize_images=False
            x = x / 255.0
        b = len(x)
        with torch.no_grad():
            stacks = x.reshape(b, self.frames, 3, self.size, self.size)
            codes = self.tokenizer.encode_frames(self.tokenizer.frame_inputs(stacks))  # (B*F, T)
            vectors = self.tokenizer.embed(codes.reshape(b, -1))  # (B, F*T, D)
        return self.head(vectors)
