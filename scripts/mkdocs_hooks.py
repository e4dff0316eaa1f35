"""MkDocs hooks (mkdocs.yml): the site also serves repository files that live outside docs/.

The full result tables (``results/``) and ``CHANGELOG.md`` stay where they are. They are added to the
site under the same paths, and pages link to each other as they do on GitHub (``../results/policy.md``
from ``docs/benchmarks.md``, ``docs/benchmarks.md`` from ``CHANGELOG.md``); such links are pointed at
the site's copies before MkDocs checks them, so ``mkdocs build --strict`` still fails on a link to a
file or an anchor that does not exist.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parents[1]
SERVED = ("results", "CHANGELOG.md")  # paths from the repository root
LINK = re.compile(r"(\]\()([^)\s#]+)([^)]*\))")  # [text](target#anchor "title")


def on_files(files: Files, config: Any) -> Files:
    for name in SERVED:
        path = ROOT / name
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            uri = file.relative_to(ROOT).as_posix()
            if files.get_file_from_path(uri) is not None:
                continue
            # CHANGELOG.md is in the nav; a result table is reached from the pages that cite it
            level = InclusionLevel.UNDEFINED if uri in SERVED else InclusionLevel.NOT_IN_NAV
            files.append(
                File(
                    uri,
                    src_dir=str(ROOT),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                    inclusion=level,
                )
            )
    return files


def site_uri(path: Path, docs: Path) -> str | None:
    """Where a repository file is on the site (its path from docs/ or from the root), or None."""
    if path.is_relative_to(docs):
        return path.relative_to(docs).as_posix()
    if path.is_relative_to(ROOT):
        uri = path.relative_to(ROOT).as_posix()
        if any(uri == s or uri.startswith(s + "/") for s in SERVED):
            return uri
    return None


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """A link written from the file's place in the repository becomes one from its place on the site."""
    if not page.file.abs_src_path:
        return markdown
    docs = Path(config["docs_dir"]).resolve()
    here = Path(page.file.abs_src_path).resolve().parent

    def repoint(match: re.Match[str]) -> str:
        target = match[2]
        if "://" in target or target.startswith(("/", "mailto:")):
            return match[0]
        path = (here / target).resolve()
        uri = site_uri(path, docs) if path.is_file() else None
        if uri is None:
            return match[0]  # MkDocs reports a missing file by the link as written
        return match[1] + posixpath.relpath(uri, posixpath.dirname(page.file.src_uri) or ".") + match[3]

    return LINK.sub(repoint, markdown)
