"""A griffe extension for the API reference (mkdocs.yml): the static view of ``voc_rl`` that Python has.

Two things griffe's static loader cannot see by itself:

* ``voc_rl.envs``, ``voc_rl.agents`` and ``voc_rl.benchmarks`` live in the top-level ``envs/``,
  ``agents/`` and ``benchmarks/`` folders, mapped into the package by setuptools ``package-dir``
  (pyproject.toml); they are loaded here under their installed names.
* ``voc_rl.make_agent`` and the other names of ``voc_rl._LAZY`` are served on first use by the
  package's ``__getattr__``; they become aliases of the objects they stand for.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "voc_rl"
PACKAGE_DIRS = {"envs": "envs", "agents": "agents", "benchmarks": "benchmarks"}  # pyproject's package-dir


class PackageDir(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != PACKAGE:
            return
        for name, folder in PACKAGE_DIRS.items():
            if name not in pkg.members or pkg.members[name].is_alias:
                pkg.set_member(name, load_folder(name, ROOT / folder, pkg, loader))
        if "_LAZY" in pkg.members:
            for name, module in ast.literal_eval(str(pkg.members["_LAZY"].value)).items():
                pkg.set_member(name, griffe.Alias(name, f"{module}.{name}", parent=pkg))

    on_package_loaded = on_package  # the hook's name before griffe 2


def load_folder(name: str, folder: Path, parent: griffe.Module, loader: griffe.GriffeLoader) -> griffe.Module:
    """The package in ``folder`` (and its modules and subpackages) as ``parent.name``."""
    module = visit(name, folder / "__init__.py", parent, loader)
    for path in sorted(folder.iterdir()):
        if path.suffix == ".py" and path.stem != "__init__":
            module.set_member(path.stem, visit(path.stem, path, module, loader))
        elif path.is_dir() and (path / "__init__.py").exists():
            module.set_member(path.name, load_folder(path.name, path, module, loader))
    return module


def visit(name: str, path: Path, parent: griffe.Module, loader: griffe.GriffeLoader) -> griffe.Module:
    code = path.read_text(encoding="utf-8")
    loader.lines_collection[path] = code.splitlines()
    return griffe.visit(
        name,
        filepath=path,
        code=code,
        parent=parent,
        extensions=loader.extensions,
        docstring_parser=loader.docstring_parser,
        docstring_options=loader.docstring_options,
        lines_collection=loader.lines_collection,
        modules_collection=loader.modules_collection,
    )
