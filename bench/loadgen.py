"""Closed-loop HTTP load on the loopback interface, bounded in time: Debian's ``wrk`` when it is
installed (a C event loop, cheap enough to share 2 cores with the server), else a small asyncio
client of our own (keep-alive HTTP/1.1 over raw sockets; costlier per request, so ``wrk`` is
preferred). Both send ``GET <path>?seed=<random>&label=<random>`` (or, with ``post``, ``POST <path>``
with the JSON body ``{"seed": …, "label": …}``; with ``pngs``, ``POST <path>`` with those PNG files in
turn) and count the status codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT

LUA = ROOT / "bench" / "generate.lua"


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: int = 0  # connect/read/write errors and client timeouts
    server_cpu_s: float = float("nan")  # CPU time the server used meanwhile (all its threads)
    thread_cpu_s: dict[str, float] = field(default_factory=dict)  # the same, split by thread
    client_cpu_s: float = float("nan")  # CPU time of the load generator (wrk) meanwhile

    @property
    def cpu_us(self) -> float:
        """Server CPU µs per answered request: robust to other load on the machine."""
        return 1e6 * self.server_cpu_s / self.requests if self.requests else float("nan")

    @property
    def rps(self) -> float:
        return self.statuses.get(200, 0) / self.seconds if self.seconds else 0.0

    @property
    def rejected(self) -> int:
        return self.statuses.get(503, 0)

    @property
    def other_errors(self) -> int:
        """Anything but 200 and deliberate 503s."""
        return sum(n for code, n in self.statuses.items() if code not in (200, 503)) + self.socket_errors


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


ALL_SEEDS = 2**31 - 1  # seeds 0…2³¹−2: the image cache practically never hits


def run_wrk(base: str, path: str, classes: int, conns: int, duration: float, timeout: float = 30.0,
            seeds: int = ALL_SEEDS, post: bool = False, pngs: list[Path] | None = None) -> LoadResult:
    method = "png" if pngs else "post" if post else "get"
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", f"--timeout={round(timeout)}s",
           "-s", str(LUA), base, "--", path, str(classes), str(seeds), method]
    if pngs:
        listing = pngs[0].parent / "bodies.txt"
        listing.write_text("".join(f"{p.resolve()}\n" for p in pngs))
        cmd.append(str(listing))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    d = json.loads(line.removeprefix("WRKJSON "))
    statuses = {int(k): int(v) for k, v in d["statuses"].items()}
    socket_errors = d["connect"] + d["read"] + d["write"] + d["timeout"]
    return LoadResult(d["requests"], d["duration_us"] / 1e6, d["p50_us"] / 1e3, d["p90_us"] / 1e3,
                      d["p99_us"] / 1e3, d["max_us"] / 1e3, statuses, socket_errors)


# --- the fallback load generator and a small client ------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection: GET (or POST) → (status, body)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, json_body: bytes | None = None,
                  content_type: str = "application/json") -> tuple[int, bytes]:
        """GET ``path``; with a body, POST it as ``content_type``."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        if json_body is None:
            self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        else:
            self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: {content_type}\r\n"
                              f"Content-Length: {len(json_body)}\r\n\r\n".encode() + json_body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for ln in lines[1:]:
            if ln.lower().startswith("content-length:"):
                length = int(ln.split(":", 1)[1])
        body = await self.reader.readexactly(length)
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None


def random_body(classes: int, rng: random.Random, seeds: int = ALL_SEEDS) -> bytes:
    body = {"seed": rng.randrange(seeds), **({"label": rng.randrange(classes)} if classes > 0 else {})}
    return json.dumps(body).encode()


def random_path(path: str, classes: int, rng: random.Random, seeds: int = ALL_SEEDS) -> str:
    q = f"?seed={rng.randrange(seeds)}"
    return path + q + (f"&label={rng.randrange(classes)}" if classes > 0 else "")


async def _load(host: str, port: int, path: str, classes: int, conns: int, duration: float,
                timeout: float, seeds: int = ALL_SEEDS, post: bool = False, pngs: list[bytes] | None = None
                ) -> LoadResult:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    start = time.perf_counter()
    stop = start + duration

    async def worker(i: int) -> None:
        nonlocal errors
        rng = random.Random(i * 7919 + int(start))
        conn = Conn(host, port)
        turn = i
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                if pngs:
                    turn = (turn + 1) % len(pngs)
                    request = conn.get(path, pngs[turn], "image/png")
                elif post:
                    request = conn.get(path, random_body(classes, rng, seeds))
                else:
                    request = conn.get(random_path(path, classes, rng, seeds))
                status, _ = await asyncio.wait_for(request, timeout)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                errors += 1
                await conn.close()
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[status] += 1
        await conn.close()

    await asyncio.gather(*(worker(i) for i in range(conns)))
    seconds = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else float("nan")

    return LoadResult(len(latencies), seconds, pct(0.5), pct(0.9), pct(0.99), pct(1.0) if latencies else 0.0,
                      dict(statuses), errors)


def run_python(base: str, path: str, classes: int, conns: int, duration: float, timeout: float = 30.0,
               seeds: int = ALL_SEEDS, post: bool = False, pngs: list[Path] | None = None) -> LoadResult:
    host, port = base.removeprefix("http://").split(":")
    bodies = [p.read_bytes() for p in pngs] if pngs else None
    return run_async(_load(host, int(port), path, classes, conns, duration, timeout, seeds, post, bodies))


def run_async(coro):
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def run_load(tool: str, base: str, path: str, classes: int, conns: int, duration: float,
             seeds: int = ALL_SEEDS, post: bool = False, pngs: list[Path] | None = None) -> LoadResult:
    """``seeds``: requests draw their seed from 0…seeds−1 (few seeds: answers from the server's image cache);
    ``post``: POST the seed and label as JSON (LitServe's route) instead of GET with a query; ``pngs``: POST
    these PNG files in turn (image-in routes)."""
    return (run_wrk if tool == "wrk" else run_python)(base, path, classes, conns, duration, seeds=seeds, post=post,
                                                      pngs=pngs)


async def fetch_all(base: str, paths: list[str], concurrency: int) -> tuple[float, list[float], Counter[int]]:
    """GET every path with ``concurrency`` keep-alive connections → (seconds in all, latencies, statuses)."""
    host, port = base.removeprefix("http://").split(":")
    queue = list(reversed(paths))
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    conns = [Conn(host, int(port)) for _ in range(min(concurrency, len(paths)))]
    for c in conns:  # connect first: the timing covers the requests, not the TCP handshakes
        c.reader, c.writer = await asyncio.open_connection(c.host, c.port)

    async def worker(conn: Conn) -> None:
        while queue:
            p = queue.pop()
            t0 = time.perf_counter()
            status, _ = await conn.get(p)
            latencies.append(time.perf_counter() - t0)
            statuses[status] += 1
        await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    return time.perf_counter() - start, latencies, statuses
