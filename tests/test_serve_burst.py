"""`tempolens serve` under a bounded burst on 127.0.0.1: 50 concurrent /live requests while 200 slow
connections hold the server, then a fresh request. No connection may be reset without an HTTP answer,
and the server must answer within 5 s afterwards. The test stops by itself (every socket has a timeout).

Figures are printed (``pytest -s``) and, with ``TEMPOLENS_BURST_REPORT=<file>``, written as JSON."""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import threading
import time

from tempolens.serve import ServeConfig, make_server, start_in_thread

N_LIVE = 50
N_SLOW = 200


def _live(port: int, barrier: threading.Barrier, results: list, i: int) -> None:
    try:
        barrier.wait(timeout=30)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/live", headers={"Host": f"127.0.0.1:{port}"})
        r = conn.getresponse()
        body = r.read()
        conn.close()
        results[i] = ("answered", r.status, len(body))
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as e:
        results[i] = ("reset", type(e).__name__, 0)
    except Exception as e:  # noqa: BLE001 - counted, reported
        results[i] = ("error", f"{type(e).__name__}: {e}", 0)


def test_burst_of_live_requests_and_slow_connections():
    timeout = 3.0
    srv = make_server(ServeConfig(port=0, timeout=timeout), analyzer=lambda text: {"n": 0})
    start_in_thread(srv)
    port = srv.server_address[1]
    slow: list[socket.socket] = []
    t_start = time.monotonic()
    try:
        # 200 slow connections: an unfinished request each, then silence (a slowloris)
        for _ in range(N_SLOW):
            s = socket.create_connection(("127.0.0.1", port), timeout=15)
            s.sendall(b"GET /live HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: " % port)
            slow.append(s)
        # 50 concurrent /live requests while they are held
        results: list = [None] * N_LIVE
        barrier = threading.Barrier(N_LIVE)
        threads = [threading.Thread(target=_live, args=(port, barrier, results, i), daemon=True) for i in range(N_LIVE)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        # afterwards, with the slow connections still open: a fresh request
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/health", headers={"Host": f"127.0.0.1:{port}"})
        after = conn.getresponse()
        after.read()
        conn.close()
        answer_after_s = time.monotonic() - t0
        # the slow connections are ended by the server: a 408 answer, not a silent reset
        slow_answers = {"408": 0, "closed": 0, "reset": 0}
        for s in slow:
            try:
                data = s.recv(4096)
                slow_answers["408" if data.startswith(b"HTTP/1.0 408") else "closed"] += 1
            except ConnectionResetError:
                slow_answers["reset"] += 1
            except TimeoutError:
                slow_answers["closed"] += 0
                raise AssertionError("a slow connection was still open 15 s after its deadline") from None
        report = {
            "live_requests": N_LIVE,
            "answered": sum(1 for r in results if r and r[0] == "answered"),
            "answered_200": sum(1 for r in results if r and r[0] == "answered" and r[1] == 200),
            "resets": sum(1 for r in results if r and r[0] == "reset"),
            "other_errors": [r[1] for r in results if not r or r[0] == "error"],
            "slow_connections": N_SLOW,
            "slow_ended_with_408": slow_answers["408"],
            "slow_reset": slow_answers["reset"],
            "answer_after_burst_s": round(answer_after_s, 3),
            "status_after_burst": after.status,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "total_s": round(time.monotonic() - t_start, 2),
        }
        print("\nburst:", json.dumps(report))
        if os.environ.get("TEMPOLENS_BURST_REPORT"):
            with open(os.environ["TEMPOLENS_BURST_REPORT"], "w") as f:
                json.dump(report, f, indent=2)
        assert report["answered_200"] == N_LIVE and report["resets"] == 0 and not report["other_errors"], report
        assert after.status == 200 and answer_after_s < 5, report
        assert slow_answers["reset"] == 0 and slow_answers["408"] == N_SLOW, report
    finally:
        for s in slow:
            s.close()
        srv.shutdown()
        srv.server_close()
