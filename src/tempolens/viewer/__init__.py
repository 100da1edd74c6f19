"""The one front end: HTML/JS/CSS assets that read a site's data files.

The viewer is plain files (no build step, no CDN, no server, no inline script or style):

- ``index.html`` (the dashboard site's page, at the site root) loads ``assets/style.css`` and
  ``assets/app.js``, which load the data files of ``docs/site-data.md`` with ``<script>`` tags, so a
  site opens from disk (``file://``);
- ``report.html`` (the autointerp report, at the root of ``tempolens autointerp --out``) is the report
  view of the same ``app.js``, reading ``data/autointerp.js``;
- ``assets/temporal.js`` draws the kernel pages, the kernel index and the event-boundary check (thin
  shells under ``<site>/kernels/`` with their data in ``kernels/data/*.js``) and the live page of
  ``tempolens serve``.

Every page carries the same Content-Security-Policy (``PAGE_CSP``). The code that installs the assets
and writes the data files lives in :mod:`tempolens.dashboards.site`; the names are re-exported here.
"""

from __future__ import annotations

from tempolens.dashboards.site import (
    ASSET_FILES,
    ASSETS_DIR,
    PAGE_CSP,
    PAGE_FILE,
    REPORT_FILE,
    ViewerError,
    install_viewer,
)

__all__ = ["ASSETS_DIR", "ASSET_FILES", "PAGE_CSP", "PAGE_FILE", "REPORT_FILE", "ViewerError", "install_viewer"]
