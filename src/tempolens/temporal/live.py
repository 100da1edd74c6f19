"""The ``/live`` page of :mod:`tempolens.serve`: type a text, see its kernels computed live.

The page is a shell of the viewer's live view (``temporal.js``, served from the package under
``/live/assets/``) with the site's one Content-Security-Policy: the view posts ``{"text": ...}`` to
``/api/analyze`` and draws the returned payload with the same code as the static kernel pages; error
messages are shown with ``textContent``.
"""

from __future__ import annotations

from tempolens.dashboards.site import html_shell

LIVE_ASSETS = "/live/assets/"
"""URL prefix under which ``tempolens serve`` answers the viewer's asset files (from the package)."""


def live_page(max_chars: int, has_site: bool = False) -> str:
    """The HTML of ``/live``: no inline script or style; ``max_chars`` limits the text box and
    ``has_site`` adds links to the served site's dashboards and kernel pages."""
    attrs = {"max-chars": str(int(max_chars)), "has-site": "true" if has_site else "false"}
    return html_shell("tempolens live kernels", "live", assets=LIVE_ASSETS, attrs=attrs)
