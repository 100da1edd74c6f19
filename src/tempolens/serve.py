"""``tempolens serve``: a local web server for a dashboard site, with live kernels for typed text.

``GET /...`` serves files of the site directory (paths are resolved and must stay inside it; no
directory listings). ``GET /live`` is a page where a person types a text and sees its similarity
kernels, attention maps, predicted share and top novel latents per token, computed by
``POST /api/analyze`` with JSON ``{"text": "..."}`` (``||`` in the text marks event boundaries).
The subject model and SAEs are loaded once at start; requests are answered one at a time.

The server binds to 127.0.0.1 by default and refuses non-loopback addresses unless
``--allow-remote`` is given; on loopback it also refuses requests whose ``Host`` header is not a
loopback name (DNS rebinding) and cross-origin POSTs.

For tests and notebooks: ``server = make_server(cfg, analyzer)``, ``start_in_thread(server)``,
``server.shutdown()``.
"""

from __future__ import annotations

import ipaddress
import json
import mimetypes
import threading
import traceback
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from tempolens.errors import TempolensError
from tempolens.options import check
from tempolens.temporal.command import TemporalSourceOptions

Analyzer = Callable[[str], dict]
"""Text → the viewer payload (:func:`tempolens.temporal.page.analysis_payload`)."""

MAX_BODY_BYTES = 256 * 1024
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


@dataclass
class ServeConfig(TemporalSourceOptions):
    """Options of ``tempolens serve``."""

    site: Path | None = None
    """Dashboard site directory to serve (written by `tempolens dashboards`/`run`); without it only /live is served."""
    host: str = "127.0.0.1"
    """Address to bind. Only loopback addresses unless --allow-remote."""
    port: int = 8765
    """TCP port (0 picks a free one)."""
    allow_remote: bool = False
    """Allow binding to a non-loopback address such as 0.0.0.0 (anyone who can reach it can run the model)."""
    live: bool = True
    """Load the model and SAEs and serve /live (off: only the static site)."""
    max_chars: int = 4000
    """Longest text /api/analyze accepts, in characters."""
    max_tokens: int = 512
    """Longest text /api/analyze accepts, in tokens including BOS (hard cap 8192)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.site is not None:
            self.site = Path(self.site)
            check(self.site.is_dir(), f"--site {self.site} is not a directory; give the folder that contains index.html")
        check(isinstance(self.port, int) and 0 <= self.port <= 65535, f"--port must be in 0..65535; got {self.port!r}")
        check(isinstance(self.max_chars, int) and 1 <= self.max_chars <= 200_000, "--max-chars must be between 1 and 200000")
        check(self.live or self.site is not None, "nothing to serve: give --site, or keep --live")
        check(
            self.allow_remote or is_loopback(self.host),
            f"--host {self.host} is not a loopback address; the server runs a model for anyone who can reach it. "
            "Use 127.0.0.1, or pass --allow-remote if you really mean it",
        )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def safe_path(root: Path, url_path: str) -> Path | None:
    """The file under ``root`` that ``url_path`` names, or None if it escapes ``root`` or is odd.

    Percent-decoding happens once; NUL bytes, backslashes and ``..`` segments are refused before
    resolving, and the resolved path (symlinks followed) must still be inside ``root``.
    """
    path = unquote(urlsplit(url_path).path)
    if "\x00" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    root_r = root.resolve()
    target = root_r.joinpath(*parts) if parts else root_r
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError):
        return None
    if resolved != root_r and root_r not in resolved.parents:
        return None
    if resolved.is_dir():
        resolved = resolved / "index.html"
    return resolved if resolved.is_file() else None


class TempolensServer(ThreadingHTTPServer):
    """The HTTP server: static ``site`` plus ``/live`` and ``/api/analyze`` backed by ``analyzer``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], site: Path | None, analyzer: Analyzer | None,
                 max_chars: int = 4000, check_host: bool = True) -> None:
        self.site = Path(site).resolve() if site is not None else None
        self.analyzer = analyzer
        self.max_chars = max_chars
        self.check_host = check_host
        self.lock = threading.Lock()
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: TempolensServer
    server_version = "tempolens"
    sys_version = ""

    # -- helpers ---------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet; errors are answered to the client

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        text = json.dumps(obj, ensure_ascii=True, allow_nan=False)
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # inert even if sniffed as HTML
        self._send(status, text.encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        if not self.server.check_host:
            return True
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
        return name.lower() in LOOPBACK_NAMES or is_loopback(name)

    # -- GET -------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "this server only answers requests addressed to localhost")
            return
        path = urlsplit(self.path).path
        if path in ("/live", "/live/"):
            if self.server.analyzer is None:
                self._error(HTTPStatus.NOT_FOUND, "live analysis is off (server started with --no-live)")
                return
            from tempolens.temporal.live import live_page

            self._send(HTTPStatus.OK, live_page(self.server.max_chars, has_site=self.server.site is not None).encode(), "text/html; charset=utf-8")
            return
        if path == "/api/health":
            self._json(HTTPStatus.OK, {"ok": True, "live": self.server.analyzer is not None, "site": self.server.site is not None})
            return
        if self.server.site is None:
            if path == "/":
                self.send_response(HTTPStatus.FOUND)
                self.send_header("Location", "/live")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._error(HTTPStatus.NOT_FOUND, "no site is served (start with --site DIR)")
            return
        target = safe_path(self.server.site, self.path)
        if target is None:
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        try:
            body = target.read_bytes()
        except OSError:
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        self._send(HTTPStatus.OK, body, ctype)

    # -- POST ------------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "this server only answers requests addressed to localhost")
            return
        if urlsplit(self.path).path != "/api/analyze":
            self._error(HTTPStatus.NOT_FOUND, "unknown endpoint; POST /api/analyze with {\"text\": ...}")
            return
        origin = self.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != (self.headers.get("Host") or ""):
            self._error(HTTPStatus.FORBIDDEN, "cross-origin requests are refused")
            return
        if self.server.analyzer is None:
            self._error(HTTPStatus.NOT_FOUND, "live analysis is off (server started with --no-live)")
            return
        if "application/json" not in (self.headers.get("Content-Type") or ""):
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON: Content-Type: application/json with {\"text\": ...}")
            return
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the request body is larger than {MAX_BODY_BYTES} bytes; send a shorter text")
            return
        try:
            obj = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._error(HTTPStatus.BAD_REQUEST, "the body is not valid UTF-8 JSON; send {\"text\": \"...\"}")
            return
        text = obj.get("text") if isinstance(obj, dict) else None
        if not isinstance(text, str):
            self._error(HTTPStatus.BAD_REQUEST, "the JSON body needs a string field 'text'")
            return
        if not text.strip():
            self._error(HTTPStatus.BAD_REQUEST, "the text is empty; type some words")
            return
        if len(text) > self.server.max_chars:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the text has {len(text)} characters; the limit is {self.server.max_chars}")
            return
        try:
            with self.server.lock:
                payload = self.server.analyzer(text)
        except TempolensError as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e).splitlines()[0] if str(e) else type(e).__name__)
            return
        except Exception as e:  # noqa: BLE001 - a bug must not kill the server; report it briefly
            traceback.print_exc()
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(e).__name__}); see the server log")
            return
        self._json(HTTPStatus.OK, payload)


def make_analyzer(model: Any, sae: Any, contrast: Any, max_tokens: int, top_k: int = 5) -> Analyzer:
    """Text → viewer payload with the given, already loaded model and SAEs."""
    from tempolens.temporal.analysis import analyze_text
    from tempolens.temporal.events import parse_marked
    from tempolens.temporal.page import analysis_payload

    def analyze(text: str) -> dict:
        clean, bounds = parse_marked(text) if "||" in text else (text, [])
        a = analyze_text(model, sae, clean, contrast=contrast, name="live", boundaries=bounds, max_tokens=max_tokens, top_k=top_k)
        from tempolens.temporal.command import _scores

        return analysis_payload(a, scores=_scores(a, 8), title="live text")

    return analyze


def make_server(cfg: ServeConfig, analyzer: Analyzer | None = None) -> TempolensServer:
    """Bind the server (no model loading here: pass ``analyzer``, or None for a static-only server)."""
    try:
        return TempolensServer((cfg.host, cfg.port), cfg.site, analyzer if cfg.live else None,
                               max_chars=cfg.max_chars, check_host=is_loopback(cfg.host))
    except OSError as e:
        raise TempolensError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}; pick another --port") from None


def start_in_thread(server: TempolensServer) -> threading.Thread:
    """Serve in a daemon thread; stop with ``server.shutdown(); server.server_close()``."""
    t = threading.Thread(target=server.serve_forever, name="tempolens-serve", daemon=True)
    t.start()
    return t


def serve(cfg: ServeConfig) -> None:
    """Load the model and SAEs once (unless ``--no-live``), then serve until Ctrl-C."""
    analyzer = None
    if cfg.live:
        from tempolens.temporal.command import load_sources

        model, sae, contrast = load_sources(cfg)
        analyzer = make_analyzer(model, sae, contrast, cfg.max_tokens)
    server = make_server(cfg, analyzer)
    print(f"serving on {server.url}" + (f"  (site: {cfg.site})" if cfg.site else ""))
    if analyzer is not None:
        print(f"live kernels: {server.url}live")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped")
    finally:
        server.server_close()
