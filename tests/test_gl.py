"""Headless OpenGL backend selection: the user's choice wins, egl then osmesa, a helpful failure."""

from __future__ import annotations

import pytest

from voc_rl.envs._gl import RenderingUnavailableError, select_gl_backend


def test_user_choice_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    tried: list[str] = []
    assert select_gl_backend(try_backend=tried.append) == "osmesa"
    assert tried == []


def test_falls_back_to_osmesa_when_egl_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr("voc_rl.envs._gl._forget_gl_modules", lambda: None)
    tried: list[str] = []

    def fake(name: str) -> None:
        tried.append(name)
        if name == "egl":
            raise ImportError("libEGL.so.1: cannot open shared object file")

    assert select_gl_backend(try_backend=fake) == "osmesa"
    assert tried == ["egl", "osmesa"]


def test_no_backend_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr("voc_rl.envs._gl._forget_gl_modules", lambda: None)

    def fail(name: str) -> None:
        raise ImportError(f"no {name}")

    with pytest.raises(RenderingUnavailableError, match="libosmesa6") as err:
        select_gl_backend(try_backend=fail)
    assert "no egl" in str(err.value) and "no osmesa" in str(err.value)
