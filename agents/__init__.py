"""voc_rl agents, built from the core in :mod:`voc_rl`: make them with ``voc_rl.make_agent(name)``."""

from voc_rl.agents.agents import BCAgent, TDCriticAgent, VOCAgent, WMRolloutAgent
from voc_rl.agents.base import Agent

__all__ = ["Agent", "BCAgent", "TDCriticAgent", "TokenFeatures", "VOCAgent", "WMRolloutAgent"]


def __getattr__(name: str):
    if name == "TokenFeatures":  # imports stable-baselines3 only when asked for
        from voc_rl.agents.features import TokenFeatures

        return TokenFeatures
    raise AttributeError(f"module 'voc_rl.agents' has no attribute {name!r}")
