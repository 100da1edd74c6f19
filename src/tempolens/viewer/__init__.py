"""The static dashboard viewer: HTML/JS/CSS assets that read a site's data files.

The viewer is plain files (no build step, no CDN, no server): ``index.html`` at the site root
loads ``assets/style.css`` and ``assets/app.js``, which load the data files of
``docs/site-data.md`` with ``<script>`` tags, so a site opens from disk (``file://``).

``install_viewer(site_dir)`` puts the assets in place; ``tempolens.dashboards.site`` calls it
and writes the data files beside them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tempolens.errors import TempolensError

ASSETS_DIR: Path = Path(__file__).resolve().parent / "assets"
"""Folder of the viewer's files: ``index.html``, ``app.js``, ``style.css``."""

PAGE_FILE = "index.html"
"""The one HTML page; it goes to the site root, everything else to ``<site>/assets/``."""

ASSET_FILES: tuple[str, ...] = ("app.js", "style.css")
"""Files that ``index.html`` loads from ``assets/``."""


class ViewerError(TempolensError):
    """The viewer's assets are missing (a broken install) or cannot be copied."""


def install_viewer(site_dir: Path | str) -> list[Path]:
    """Copy the viewer into ``site_dir``: ``index.html`` at its root, the rest under ``assets/``.

    Existing viewer files are replaced (each copy is written to a temporary name, then renamed,
    so a reader never sees half a file); data files are not touched. Returns the written paths.
    """
    site = Path(site_dir)
    sources = [ASSETS_DIR / PAGE_FILE] + [ASSETS_DIR / name for name in ASSET_FILES]
    missing = [p.name for p in sources if not p.is_file()]
    if missing:
        raise ViewerError(f"viewer assets {', '.join(missing)} are missing from {ASSETS_DIR}; reinstall tempolens")
    targets = [site / PAGE_FILE] + [site / "assets" / name for name in ASSET_FILES]
    written = []
    try:
        (site / "assets").mkdir(parents=True, exist_ok=True)
        for src, dst in zip(sources, targets):
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
            written.append(dst)
    except OSError as e:
        raise ViewerError(f"cannot write the viewer into {site} ({e.strerror or e}); choose a writable --out folder") from e
    return written


__all__ = ["ASSETS_DIR", "ASSET_FILES", "PAGE_FILE", "ViewerError", "install_viewer"]
