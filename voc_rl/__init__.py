"""voc_rl: video occupancy models as world and value models for pixel-based control.

``import voc_rl`` registers the ``voc_rl/...`` gymnasium environments (see :mod:`voc_rl.envs`) and
stays light: torch-based parts (``make_agent``, ``make_tokenizer``, datasets) load on first use.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from voc_rl import envs
from voc_rl.envs import list_envs, make_env

try:
    __version__ = version("voc-rl")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

_LAZY = {
    "make_tokenizer": "voc_rl.tokenizers",
    "list_tokenizers": "voc_rl.tokenizers",
    "open_dataset": "voc_rl.data",
    "make_agent": "voc_rl.registry",
    "list_agents": "voc_rl.registry",
    "register": "voc_rl.registry",
    "load_agent": "voc_rl.registry",
    "AgentConfig": "voc_rl.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'voc_rl' has no attribute {name!r}")


__all__ = [
    "AgentConfig",
    "__version__",
    "envs",
    "list_agents",
    "list_envs",
    "list_tokenizers",
    "load_agent",
    "make_agent",
    "make_env",
    "make_tokenizer",
    "open_dataset",
    "register",
]
