"""Choose a headless OpenGL backend for MuJoCo before dm_control is first imported.

dm_control reads ``MUJOCO_GL`` once, at import. With it unset on a machine without a display it
picks nothing that works, and rendering fails deep inside PyOpenGL. We therefore set it ourselves,
but only when the user has not: ``egl`` first (Mesa's llvmpipe ships with the usual images and needs
no extra package), then ``osmesa``. Both give byte-identical frames.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

BACKENDS = ("egl", "osmesa")
INSTALL_HINT = (
    "Headless rendering needs EGL or OSMesa. On Debian/Ubuntu: `apt-get install -y libegl1` (EGL) or "
    "`apt-get install -y libosmesa6` (OSMesa), then set MUJOCO_GL=egl or MUJOCO_GL=osmesa. "
    "On a desktop with a display, MUJOCO_GL=glfw also works."
)


class RenderingUnavailableError(RuntimeError):
    """No OpenGL backend could be loaded for MuJoCo rendering."""


def _try_backend(name: str) -> None:
    """Import dm_control's renderer for ``name``; raises if the platform library cannot be loaded."""
    os.environ["MUJOCO_GL"] = name
    os.environ["PYOPENGL_PLATFORM"] = name
    render = importlib.import_module("dm_control._render")
    if name != render.BACKEND:
        raise ImportError(f"dm_control picked {render.BACKEND!r} instead of {name!r}")
    # Creating a context is what fails on a machine whose library is present but unusable.
    render.Renderer(max_width=8, max_height=8).free()


def _forget_gl_modules() -> None:
    """Drop half-initialised PyOpenGL / dm_control modules so that another backend can be tried."""
    for mod in list(sys.modules):
        if mod == "OpenGL" or mod.startswith(("OpenGL.", "dm_control")):
            del sys.modules[mod]


def select_gl_backend(
    candidates: Sequence[str] = BACKENDS, try_backend: Callable[[str], None] = _try_backend
) -> str:
    """Make sure ``MUJOCO_GL`` names a working backend and return it.

    A value the user set is respected as is (errors surface at the first render). Otherwise each
    candidate is tried in order; if none loads, :class:`RenderingUnavailableError` says what to install.
    """
    user_choice = os.environ.get("MUJOCO_GL")
    if user_choice:
        return user_choice
    errors = []
    for name in candidates:
        try:
            try_backend(name)
            return name
        except Exception as exc:  # the platform libraries raise many different types
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            _forget_gl_modules()
    os.environ.pop("MUJOCO_GL", None)
    os.environ.pop("PYOPENGL_PLATFORM", None)
    raise RenderingUnavailableError(
        "Could not load an OpenGL backend for MuJoCo (tried " + "; ".join(errors) + "). " + INSTALL_HINT
    )


_selected: str | None = None


def ensure_gl_backend() -> str:
    """Select the backend once per process (cheap after the first call)."""
    global _selected
    if _selected is None:
        _selected = select_gl_backend()
    return _selected
