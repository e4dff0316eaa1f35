"""voc_rl: video occupancy models as world and value models for pixel-based control.

``import voc_rl`` registers the ``voc_rl/...`` gymnasium environments (see :mod:`voc_rl.envs`).
"""

from importlib.metadata import PackageNotFoundError, version

from voc_rl import envs
from voc_rl.envs import list_envs, make_env

try:
    __version__ = version("voc-rl")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "envs", "list_envs", "make_env"]
