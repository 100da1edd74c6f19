"""``tempolens serve``: a local web server for a dashboard site, with live kernels for typed text.

``GET /...`` serves files of the site directory (paths are resolved and must stay inside it; no
directory listings). ``GET /live`` is a page where a person types a text and sees its similarity
kernels, attention maps, predicted share and top novel latents per token, computed by
``POST /api/analyze`` with JSON ``{"text": "..."}`` (``||`` in the text marks event boundaries).
The subject model and SAEs are loaded once at start; requests are answered one at a time.

The server binds to 127.0.0.1 by default and refuses non-loopback addresses unless
``--allow-remote`` is given; on loopback it also refuses requests whose ``Host`` header is not a
loopback name (DNS rebinding). ``POST /api/analyze`` needs ``Content-Type: application/json``
exactly (parameter ``charset=utf-8`` only) and an ``Origin`` that is absent or the served origin
(``null`` is refused), so a page of another origin, a sandboxed frame or a ``file://`` page cannot
make it run the model. Bodies are limited in size and JSON nesting depth, URL paths in length.

Every response carries a ``Content-Security-Policy`` header (``frame-ancestors 'none'``; HTML
pages get the site's one page policy, :data:`~tempolens.dashboards.site.PAGE_CSP`, the same as their
``<meta>``: scripts and styles from files only, never inline), ``X-Frame-Options: DENY``,
``Referrer-Policy: no-referrer`` and ``X-Content-Type-Options: nosniff``. ``GET /live/assets/<file>``
answers the viewer's asset files from the package (the live page's script and style).

Each connection gets its own thread, at most ``MAX_CONNECTIONS`` at once (more are answered 503);
the listen backlog is ``LISTEN_BACKLOG``. A connection must deliver its request within
``--timeout`` seconds (idle and slowly dripping connections are closed, with a 408 where possible).

For tests and notebooks: ``server = make_server(cfg, analyzer)``, ``start_in_thread(server)``,
``server.shutdown()``.
"""

from __future__ import annotations

import ipaddress
import json
import mimetypes
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tempolens.dashboards.site import ASSET_FILES, ASSETS_DIR, PAGE_CSP
from tempolens.errors import TempolensError
from tempolens.options import check
from tempolens.temporal.command import TemporalSourceOptions
from tempolens.temporal.live import LIVE_ASSETS

Analyzer = Callable[[str], dict]
"""Text → the viewer payload (:func:`tempolens.temporal.page.analysis_payload`)."""

MAX_BODY_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays/objects accepted in a request body (the API needs 1)."""
MAX_PATH_CHARS = 2048
"""Longest URL path answered (414 beyond); a single path segment over 255 characters is a 404."""
MAX_CONNECTIONS = 512
"""Connections served at once, one thread each; more are answered 503 at once."""
LISTEN_BACKLOG = 128
"""Connections the kernel queues before the server accepts them."""
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
FRAME_HEADERS = {"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
DATA_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
"""CSP of every response that is not an HTML page (JSON, scripts, data, errors)."""
HTML_CSP = PAGE_CSP + "; frame-ancestors 'none'"
"""CSP of every HTML page: the pages' own ``<meta>`` policy (no inline script or style), and no framing."""


def is_json_content_type(value: str | None) -> bool:
    """True for ``application/json``, optionally with ``charset=utf-8`` — nothing else (not a substring match)."""
    if not value:
        return False
    media, *params = (part.strip() for part in value.split(";"))
    if media.lower() != "application/json":
        return False
    for param in params:
        key, eq, val = param.partition("=")
        if not eq or key.strip().lower() != "charset" or val.strip().strip('"').lower() != "utf-8":
            return False
    return True


def json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of arrays/objects in JSON ``text`` (strings skipped); stops counting past ``limit``."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > limit:
                    return best
        elif ch in "]}":
            depth -= 1
    return best


def unencodable_text(text: str) -> str | None:
    """A one-line message when ``text`` cannot be encoded as UTF-8 (lone surrogates), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (
            f"the text has U+{ord(text[e.start]):04X} at character {e.start}, a lone surrogate that is no Unicode "
            "character (half of a pair); remove it or send the whole character"
        )
    return None


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
    timeout: float = 10.0
    """Seconds a connection may take to send its whole request; idle and slow connections are closed after it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.site is not None:
            self.site = Path(self.site)
            check(
                self.site.is_dir(), f"--site {self.site} is not a directory; give the folder that contains index.html"
            )
        check(isinstance(self.port, int) and 0 <= self.port <= 65535, f"--port must be in 0..65535; got {self.port!r}")
        check(
            isinstance(self.max_chars, int) and 1 <= self.max_chars <= 200_000,
            "--max-chars must be between 1 and 200000",
        )
        number = isinstance(self.timeout, (int, float)) and not isinstance(self.timeout, bool)
        check(
            number and 0.1 <= self.timeout <= 3600,
            f"--timeout must be between 0.1 and 3600 seconds; got {self.timeout!r}",
        )
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
    if "\x00" in path or "\\" in path or len(path) > MAX_PATH_CHARS:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." or len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        return None
    root_r = root.resolve()
    target = root_r.joinpath(*parts) if parts else root_r
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError):
        return None
    if resolved != root_r and root_r not in resolved.parents:
        return None
    try:
        if resolved.is_dir():
            resolved = resolved / "index.html"
        return resolved if resolved.is_file() else None
    except OSError:  # name too long, permissions ...: not servable
        return None


def _raw_answer(status: HTTPStatus, message: str) -> bytes:
    """A complete JSON error response, for answers sent outside a request handler."""
    body = json.dumps({"error": message}).encode()
    head = [
        f"HTTP/1.0 {status.value} {status.phrase}",
        "Content-Type: application/json; charset=utf-8",
        "Connection: close",
        f"Content-Security-Policy: {DATA_CSP}",
        *(f"{k}: {v}" for k, v in FRAME_HEADERS.items()),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_BUSY = _raw_answer(HTTPStatus.SERVICE_UNAVAILABLE, "the server is busy; retry in a moment")
_TIMEOUT = _raw_answer(HTTPStatus.REQUEST_TIMEOUT, "the request took too long to arrive; send it at once")


class TempolensServer(ThreadingHTTPServer):
    """The HTTP server: static ``site`` plus ``/live`` and ``/api/analyze`` backed by ``analyzer``.

    One thread per connection, at most :data:`MAX_CONNECTIONS`; a connection that has not delivered
    its request (line, headers and, for POST, body) ``timeout`` seconds after it was accepted is answered
    408 and closed by a watchdog thread; each socket operation also times out (after ``timeout + 1`` s)."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        site: Path | None,
        analyzer: Analyzer | None,
        max_chars: int = 4000,
        check_host: bool = True,
        timeout: float = 10.0,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.site = Path(site).resolve() if site is not None else None
        self.analyzer = analyzer
        self.max_chars = max_chars
        self.check_host = check_host
        self.conn_timeout = float(timeout)
        self.lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._pending: dict[socket.socket, float] = {}
        self._pending_lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__(address, Handler)
        threading.Thread(target=self._watchdog, name="tempolens-serve-watchdog", daemon=True).start()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            threading.Thread(target=_close_gently, args=(request,), daemon=True).start()  # keeps accepting meanwhile
            return
        self.headers_pending(request)  # the request deadline starts at accept
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.headers_done(request)
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.headers_done(request)
            self._slots.release()

    def headers_pending(self, conn: socket.socket) -> None:
        with self._pending_lock:
            self._pending[conn] = time.monotonic() + self.conn_timeout

    def headers_done(self, conn: socket.socket) -> bool:
        """Stop watching ``conn``; False when the watchdog already timed it out."""
        with self._pending_lock:
            return self._pending.pop(conn, None) is not None

    def _watchdog(self) -> None:
        while not self._closed.wait(min(0.25, self.conn_timeout / 4)):
            now = time.monotonic()
            with self._pending_lock:
                late = [c for c, deadline in self._pending.items() if deadline <= now]
                for conn in late:
                    del self._pending[conn]
                    try:
                        conn.sendall(_TIMEOUT)
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def shutdown_request(self, request: Any) -> None:
        _close_gently(request)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"


def _close_gently(sock: Any) -> None:
    """Close after the answer: stop sending, read what the client still sends (at most about a
    second), then close, so that unread request bytes do not turn the close into a reset that
    destroys the answer before the client has read it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.2)
        end = time.monotonic() + 1.0
        while time.monotonic() < end and sock.recv(65536):
            pass
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Handler(BaseHTTPRequestHandler):
    server: TempolensServer
    server_version = "tempolens"
    sys_version = ""
    _csp: str | None = None

    # -- connection ------------------------------------------------------------------------------
    def setup(self) -> None:
        self.timeout = self.server.conn_timeout + 1.0  # every read times out; the watchdog (408) comes first
        super().setup()

    def _arrived(self) -> bool:
        """Stop the request deadline (the request has arrived); False when the watchdog already answered 408."""
        if not getattr(self, "_deadline_stopped", False):
            self._deadline_stopped = True
            self._timed_out = not self.server.headers_done(self.connection)
        if self._timed_out:
            self.close_connection = True
        return not self._timed_out

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok and self.command == "POST":
            return True  # do_POST stops the deadline once the body is read
        return self._arrived() and ok

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, 414, 501 ...) as JSON with the usual headers."""
        self.close_connection = True
        if not self._arrived():
            return  # the watchdog has answered this connection (408)
        try:
            self._error(code, message or HTTPStatus(code).phrase)
        except OSError:
            pass

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", self._csp or DATA_CSP)
        for k, v in FRAME_HEADERS.items():
            self.send_header(k, v)
        super().end_headers()

    # -- helpers ---------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet; errors are answered to the client

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self._csp = HTML_CSP if ctype.startswith("text/html") else None
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        text = json.dumps(obj, ensure_ascii=True, allow_nan=False)
        text = (
            text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        )  # inert even if sniffed as HTML
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

    def _path_ok(self) -> bool:
        if len(self.path) > MAX_PATH_CHARS:
            self._error(HTTPStatus.REQUEST_URI_TOO_LONG, f"the URL is longer than {MAX_PATH_CHARS} characters")
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "this server only answers requests addressed to localhost")
            return
        if not self._path_ok():
            return
        path = urlsplit(self.path).path
        if path in ("/live", "/live/"):
            if self.server.analyzer is None:
                self._error(HTTPStatus.NOT_FOUND, "live analysis is off (server started with --no-live)")
                return
            page = _live_html(self.server.max_chars, self.server.site is not None)
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            return
        if path.startswith(LIVE_ASSETS):
            name = path[len(LIVE_ASSETS) :]
            if name not in ASSET_FILES:
                self._error(HTTPStatus.NOT_FOUND, "not found")
                return
            ctype = "text/css" if name.endswith(".css") else "text/javascript"
            self._send(HTTPStatus.OK, (ASSETS_DIR / name).read_bytes(), ctype + "; charset=utf-8")
            return
        if path == "/api/health":
            self._json(
                HTTPStatus.OK,
                {"ok": True, "live": self.server.analyzer is not None, "site": self.server.site is not None},
            )
            return
        if self.server.site is None:
            if path == "/":
                self._csp = None
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
    def _origin_ok(self) -> bool:
        """No Origin (a same-origin form or a non-browser client), or exactly the origin that was served."""
        origins = self.headers.get_all("Origin") or []
        if not origins:
            return True
        return len(origins) == 1 and origins[0].strip() == "http://" + (self.headers.get("Host") or "").strip()

    def _read_body(self) -> tuple[int, bytes | None]:
        """``(Content-Length, body)``: -1 for a missing or unreadable length; the body is read (before any
        answer: an answer before the body is read may be lost in a reset) only when its length is allowed."""
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            length = -1
        body: bytes | None = None
        if 0 <= length <= MAX_BODY_BYTES:
            body = self.rfile.read(length)
        return length, body

    def _post_allowed(self) -> bool:
        """Whether this POST may be analysed at all: addressed to localhost, a short path naming the analysis
        endpoint, same origin, live analysis on. Otherwise answers the error and returns False."""
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "this server only answers requests addressed to localhost")
            return False
        if not self._path_ok():
            return False
        if urlsplit(self.path).path != "/api/analyze":
            self._error(HTTPStatus.NOT_FOUND, 'unknown endpoint; POST /api/analyze with {"text": ...}')
            return False
        if not self._origin_ok():
            self._error(
                HTTPStatus.FORBIDDEN,
                "cross-origin requests are refused (Origin must be absent or this server's origin)",
            )
            return False
        if self.server.analyzer is None:
            self._error(HTTPStatus.NOT_FOUND, "live analysis is off (server started with --no-live)")
            return False
        return True

    def _checked_body(self, length: int, body: bytes | None) -> bytes | None:
        """The body when it is declared JSON, has a Content-Length and was within the size limit; otherwise
        answers the error (closing the connection after a too large body) and returns None."""
        if not is_json_content_type(self.headers.get("Content-Type")):
            self._error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                'send JSON: Content-Type: application/json (optionally ; charset=utf-8) with {"text": ...}',
            )
            return None
        if length == -1:
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            return None
        if body is None:
            self.close_connection = True
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the request body is larger than {MAX_BODY_BYTES} bytes; send a shorter text",
            )
            return None
        return body

    def _request_text(self, body: bytes) -> str | None:
        """The ``text`` field of a UTF-8 JSON body of bounded depth: a non-blank string within the length limit
        that the analyzer can encode. Otherwise answers the error and returns None."""
        try:
            raw = body.decode("utf-8")
            if json_depth(raw) > MAX_JSON_DEPTH:
                self._error(
                    HTTPStatus.BAD_REQUEST,
                    f'the JSON body is nested deeper than {MAX_JSON_DEPTH} levels; send {{"text": "..."}}',
                )
                return None
            obj = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            self._error(HTTPStatus.BAD_REQUEST, 'the body is not valid UTF-8 JSON; send {"text": "..."}')
            return None
        text = obj.get("text") if isinstance(obj, dict) else None
        if not isinstance(text, str):
            self._error(HTTPStatus.BAD_REQUEST, "the JSON body needs a string field 'text'")
            return None
        if not text.strip():
            self._error(HTTPStatus.BAD_REQUEST, "the text is empty; type some words")
            return None
        if len(text) > self.server.max_chars:
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the text has {len(text)} characters; the limit is {self.server.max_chars}",
            )
            return None
        bad_text = unencodable_text(text)
        if bad_text:
            self._error(HTTPStatus.BAD_REQUEST, bad_text)
            return None
        return text

    def _analyze(self, text: str) -> None:
        """Answer the analysis of ``text`` (one analysis at a time); a tempolens error is a 400 with its first
        line, any other exception a 500 (logged; the server keeps running)."""
        try:
            with self.server.lock:
                payload = self.server.analyzer(text)  # type: ignore[misc]  # not None: see _post_allowed
        except TempolensError as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e).splitlines()[0] if str(e) else type(e).__name__)
            return
        except Exception as e:  # noqa: BLE001 - a bug must not kill the server; report it briefly
            traceback.print_exc()
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(e).__name__}); see the server log")
            return
        self._json(HTTPStatus.OK, payload)

    def do_POST(self) -> None:  # noqa: N802
        """``POST /api/analyze {"text": ...}``: read the body, check the request, then the body and its text (the
        first failed check answers its error), then answer the analysis."""
        length, body = self._read_body()
        if not self._arrived():  # the watchdog answered 408 meanwhile
            return
        if not self._post_allowed():
            return
        body = self._checked_body(length, body)
        if body is None:
            return
        text = self._request_text(body)
        if text is not None:
            self._analyze(text)


_LIVE_HTML: dict[tuple[int, bool], bytes] = {}


def _live_html(max_chars: int, has_site: bool) -> bytes:
    key = (int(max_chars), bool(has_site))
    if key not in _LIVE_HTML:
        from tempolens.temporal.live import live_page

        _LIVE_HTML[key] = live_page(max_chars, has_site=has_site).encode()
    return _LIVE_HTML[key]


def make_analyzer(model: Any, sae: Any, contrast: Any, max_tokens: int, top_k: int = 5) -> Analyzer:
    """Text → viewer payload with the given, already loaded model and SAEs."""
    from tempolens.temporal.analysis import analyze_text
    from tempolens.temporal.events import parse_marked
    from tempolens.temporal.page import analysis_payload

    def analyze(text: str) -> dict:
        clean, bounds = parse_marked(text) if "||" in text else (text, [])
        a = analyze_text(
            model, sae, clean, contrast=contrast, name="live", boundaries=bounds, max_tokens=max_tokens, top_k=top_k
        )
        from tempolens.temporal.command import kernel_scores

        return analysis_payload(a, scores=kernel_scores(a, 8), title="live text")

    return analyze


def make_server(cfg: ServeConfig, analyzer: Analyzer | None = None) -> TempolensServer:
    """Bind the server (no model loading here: pass ``analyzer``, or None for a static-only server)."""
    try:
        return TempolensServer(
            (cfg.host, cfg.port),
            cfg.site,
            analyzer if cfg.live else None,
            max_chars=cfg.max_chars,
            check_host=is_loopback(cfg.host),
            timeout=cfg.timeout,
        )
    except OSError as e:
        raise TempolensError(
            f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}; pick another --port"
        ) from None


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
