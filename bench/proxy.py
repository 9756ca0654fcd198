"""Serving through the caching reverse proxy (deploy/nginx/) vs directly, in one run.

Debian's nginx runs the real template (rendered as the official nginx image renders it) on loopback in
front of ganserve (``python -m app``, its default processes), and ``wrk`` loads both with the same traffic,
interleaved, on the same machine:

* cache-hit traffic: 40 seeds × every class of versioned URLs (``version=`` the loaded one, immutable),
  fetched once beforehand — directly they come from the service's own image cache (LRU), through nginx
  from nginx's cache without reaching the service;
* cache-miss traffic: versioned URLs with random seeds — every request is a forward pass in the service,
  and through nginx it is also written into nginx's cache.

Each point reports requests/s, latency, CPU time per request of the service and of nginx, and the share of
requests that reached the service (its own /metrics). The report is printed and written into the
``## Through the caching proxy`` section of docs/performance.md (``--quick``: 1 s points, printed only).

    python bench/proxy.py [--duration 10] [--reps 3] [--conns 64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/proxy.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ROOT,
    command_line,
    descendants,
    free_port,
    machine_lines,
    markdown_table,
    median,
    proc_cpu_seconds,
    publish,
    spread,
)
from bench.loadgen import ALL_SEEDS, fetch_all, run_async

TEMPLATE = ROOT / "deploy" / "nginx" / "ganserve.conf.template"
TEMPLATE_VARS = ("GANSERVE_UPSTREAM", "NGINX_PORT", "NGINX_CACHE_DIR", "GANSERVE_MAX_UPLOAD_BYTES")
LUA = ROOT / "bench" / "proxy.lua"
HOST = "127.0.0.1"  # loopback only
DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "mnist-cgan"
SETTLE_S = 0.5  # seconds without a new answered request that count as settled
HIT_SEEDS = 40  # × 10 classes = 400 URLs: within the service's 512-entry image cache and nginx's


# --- nginx from the real template -------------------------------------------------------------------


def nginx_binary() -> str | None:
    """Debian's nginx (in /usr/sbin, which a non-root PATH may lack), or None."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def render_template(values: dict[str, str], template: Path = TEMPLATE) -> str:
    """The template with exactly its four variables substituted, as the official image's
    ``20-envsubst-on-templates.sh`` does (``envsubst`` limited to the names it knows, so nginx's own
    ``$variables`` stay); Python's equivalent where gettext's envsubst is missing."""
    if set(values) != set(TEMPLATE_VARS):
        raise ValueError(f"the template takes exactly {', '.join(TEMPLATE_VARS)}; got {', '.join(sorted(values))}")
    text = template.read_text()
    envsubst = shutil.which("envsubst")
    if envsubst:
        shell_format = " ".join(f"${{{k}}}" for k in TEMPLATE_VARS)
        return subprocess.run([envsubst, shell_format], input=text, capture_output=True, text=True, check=True,
                              env={**os.environ, **values}).stdout
    return re.sub(r"\$\{(" + "|".join(TEMPLATE_VARS) + r")\}", lambda m: values[m.group(1)], text)


def main_conf(prefix: Path, include: Path, workers: int = 1) -> str:
    """The main nginx.conf around the rendered include (what the official image's nginx.conf does with
    /etc/nginx/conf.d/*.conf), every path under ``prefix``."""
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # as root, workers would otherwise run as nobody
    return (f"{user}worker_processes {workers};\npid {prefix / 'nginx.pid'};\n"
            f"error_log {prefix / 'error.log'} warn;\nevents {{ worker_connections 4096; }}\n"
            f"http {{\n    access_log off;\n{temp}\n    include {include};\n}}\n")


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    port: int
    prefix: Path

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def error_log(self) -> str:
        log = self.prefix / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def cpu_seconds(self) -> float:
        """CPU seconds so far of the master and its workers (Linux)."""
        total = 0.0
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                total += proc_cpu_seconds(Path(f"/proc/{pid}/stat"))
            except OSError:
                continue
        return total


@contextmanager
def run_nginx(upstream: str, workdir: Path, *, max_upload_bytes: int = 8 * 1024 * 1024,
              workers: int = 1) -> Iterator[Nginx]:
    """Debian's nginx in the foreground on a free loopback port, configured by the rendered template;
    stopped (gracefully, then killed) at exit."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (scripts/setup.sh test installs Debian's nginx)")
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix=f"nginx-{port}-", dir=workdir))
    include = prefix / "ganserve.conf"
    include.write_text(render_template({"GANSERVE_UPSTREAM": upstream, "NGINX_PORT": f"{HOST}:{port}",
                                        "NGINX_CACHE_DIR": str(prefix / "cache"),
                                        "GANSERVE_MAX_UPLOAD_BYTES": str(max_upload_bytes)}))
    conf = prefix / "nginx.conf"
    conf.write_text(main_conf(prefix, include, workers))
    cmd = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed: {check.stderr}")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    nginx = Nginx(proc, port, prefix)
    try:
        until = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {proc.returncode}: {nginx.error_log()}")
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > until:
                    raise RuntimeError(f"nginx not listening after 20 s: {nginx.error_log()}") from None
                time.sleep(0.05)
        yield nginx
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful stop
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the load -------------------------------------------------------------------------------------


@dataclass
class Point:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    cache: dict[str, int]
    socket_errors: int
    service_cpu_s: float = 0.0
    nginx_cpu_s: float = 0.0
    reached_service: float = 0.0  # requests the service answered meanwhile (its /metrics)

    @property
    def rps(self) -> float:
        return self.statuses.get(200, 0) / self.seconds if self.seconds else 0.0

    def per_request_us(self, cpu_s: float) -> float:
        return 1e6 * cpu_s / self.requests if self.requests else float("nan")


def run_wrk(base: str, model: str, classes: int, seeds: int, version: str, conns: int, duration: float) -> Point:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--timeout=30s", "-s", str(LUA), base,
           "--", model, str(classes), str(seeds), version]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    d = json.loads(line.removeprefix("WRKJSON "))
    return Point(d["requests"], d["duration_us"] / 1e6, d["p50_us"] / 1e3, d["p99_us"] / 1e3,
                 {int(k): int(v) for k, v in d["statuses"].items()}, dict(d["cache"]),
                 d["connect"] + d["read"] + d["write"] + d["timeout"])


@dataclass
class Service:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return bytes(r.read())

    def answered(self) -> float:
        """Requests the service has answered (all its processes), by its /metrics, /metrics itself aside."""
        text = self.get("/metrics").decode()
        return sum(float(m.group(2)) for m in re.finditer(r'^ganserve_requests_total\{([^}]*)\} (\S+)$', text, re.M)
                   if 'route="/metrics"' not in m.group(1))

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the service's request count stops moving (nothing left in flight)."""
        until = time.monotonic() + timeout
        last = self.answered()
        while time.monotonic() < until:
            time.sleep(SETTLE_S)
            now = self.answered()
            if now == last:
                return
            last = now

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                total += proc_cpu_seconds(Path(f"/proc/{pid}/stat"))
            except OSError:
                continue
        return total


@contextmanager
def run_service(checkpoints: Path, model: str, workdir: Path) -> Iterator[Service]:
    port = free_port()
    log = workdir / "ganserve.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GANSERVE_CHECKPOINTS": str(checkpoints),
           "GANSERVE_DEFAULT_MODEL": model, "GANSERVE_RELOAD_INTERVAL_S": "0", "GANSERVE_LOG_LEVEL": "WARNING"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app", "--host", HOST, "--port", str(port)], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    service = Service(port, proc, log)
    try:
        until = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ganserve exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(service.base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > until:
                raise RuntimeError(f"ganserve not ready after 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield service
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(service: Service, nginx: Nginx, via_nginx: bool, model: str, classes: int, seeds: int, version: str,
            conns: int, duration: float) -> Point:
    served, s_cpu, n_cpu = service.answered(), service.cpu_seconds(), nginx.cpu_seconds()
    point = run_wrk(nginx.base if via_nginx else service.base, model, classes, seeds, version, conns, duration)
    service.settle()  # the requests in flight when wrk stopped are answered (and counted) before the next point
    point.service_cpu_s = service.cpu_seconds() - s_cpu
    point.nginx_cpu_s = nginx.cpu_seconds() - n_cpu
    point.reached_service = service.answered() - served
    return point


def warm_up(base: str, paths: list[str], timeout: float = 60.0) -> None:
    """GET every path until all answer 200: fills nginx's cache and the service's. With several processes,
    /readyz answered by one does not mean the others have loaded: their 503 + Retry-After are retried."""
    until = time.monotonic() + timeout
    while True:
        _, _, statuses = run_async(fetch_all(base, paths, 16))
        if set(statuses) == {200}:
            return
        if set(statuses) - {200, 503} or time.monotonic() > until:
            raise SystemExit(f"warm-up: unexpected statuses {dict(statuses)}")
        time.sleep(1.0)


# --- the run and the report -----------------------------------------------------------------------

TRAFFIC = {"hit": "cache hit (400 versioned URLs, fetched once before)",
           "miss": "cache miss (versioned URLs, random seeds)"}
PATHS = {False: "direct", True: "through nginx"}


@dataclass
class Results:
    points: dict[tuple[str, bool], list[Point]] = field(default_factory=dict)
    model: str = ""
    version: str = ""
    processes: int = 0


def run(args: argparse.Namespace) -> Results:
    from bench.serving import default_processes, prepare_checkpoint
    from training.checkpoint import read_config

    res = Results()
    with tempfile.TemporaryDirectory(prefix="ganserve-proxy-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ckpt, args.ckpt_note = prepare_checkpoint(Path(args.checkpoint).resolve(), tmp / "checkpoints")
        classes = read_config(ckpt).num_classes
        res.model = ckpt.name
        with run_service(ckpt.parent, res.model, tmp) as service, \
                run_nginx(f"{HOST}:{service.port}", tmp, workers=args.nginx_workers) as nginx:
            res.processes = default_processes({"GANSERVE_CHECKPOINTS": str(ckpt.parent)})
            res.version = json.loads(service.get(f"/models/{res.model}"))["version"]
            label = "&label={}" if classes else ""
            warm = [f"/generate?model={res.model}&seed={s}{label.format(c)}&version={res.version}"
                    for s in range(HIT_SEEDS) for c in range(max(1, classes))]
            warm_up(nginx.base, warm)
            for rep in range(args.reps):
                for traffic, seeds in (("hit", HIT_SEEDS), ("miss", ALL_SEEDS)):
                    for via in (False, True) if rep % 2 == 0 else (True, False):  # alternate who goes first
                        p = measure(service, nginx, via, res.model, classes, seeds, res.version, args.conns,
                                    args.duration)
                        res.points.setdefault((traffic, via), []).append(p)
                        print(f"rep {rep + 1} {traffic:4s} {PATHS[via]:13s}: {p.rps:7.0f} req/s, p50 "
                              f"{p.p50_ms:.1f} ms, p99 {p.p99_ms:.1f} ms, statuses {p.statuses}, cache {p.cache}",
                              flush=True)
            errors = nginx.error_log()
    if any(" [error] " in line or " [crit] " in line for line in errors.splitlines()):
        print(f"nginx error log:\n{errors[-3000:]}", flush=True)
    return res


def report(args: argparse.Namespace, res: Results) -> str:
    rows = []
    for traffic in TRAFFIC:
        for via in (False, True):
            ps = res.points[(traffic, via)]
            ok = all(set(p.statuses) == {200} and not p.socket_errors for p in ps)
            rows.append([
                TRAFFIC[traffic], PATHS[via], spread([p.rps for p in ps]),
                spread([p.p50_ms for p in ps], "{:.1f}"), spread([p.p99_ms for p in ps], "{:.1f}"),
                spread([p.per_request_us(p.service_cpu_s) for p in ps]),
                spread([p.per_request_us(p.nginx_cpu_s) for p in ps]) if via else "–",
                f"{100 * median([p.reached_service / p.requests for p in ps]):.1f} %",
                "yes" if ok else "**no**: " + ", ".join(f"{p.statuses} {p.socket_errors} socket errors" for p in ps),
            ])
    hit_ratio = median([p.rps for p in res.points[("hit", True)]]) / median([p.rps for p in res.points[("hit", False)]])
    miss_ratio = (median([p.rps for p in res.points[("miss", True)]])
                  / median([p.rps for p in res.points[("miss", False)]]))
    lines = [
        "## Through the caching proxy",
        "",
        f"`{command_line()}` — generated by `bench/proxy.py`; re-running it rewrites this section.",
        "",
        *args.header,
        "",
        f"Debian's nginx ({args.nginx_version}, {args.nginx_workers} worker) runs "
        f"`deploy/nginx/ganserve.conf.template` on loopback in front of ganserve (`python -m app`: "
        f"{res.processes} process{'es' if res.processes > 1 else ''} here) serving "
        f"{args.ckpt_note}, version `{res.version}`. `wrk -t1 -c{args.conns}` with `bench/proxy.lua` sends the "
        f"same traffic directly and through nginx, interleaved, {args.duration:g} s per point, {args.reps} "
        "repetitions (median, min–max). CPU µs are per request, of the service's processes and of nginx's; "
        "*reached the service* is the service's own request count (its /metrics) over the requests wrk "
        "completed (a little over 100 % when all reach it: wrk does not count the requests still in flight "
        "when it stops, the service answers them). "
        "nginx, the service and wrk share the machine's cores.",
        "",
        markdown_table(["traffic", "path", "req/s", "p50 ms", "p99 ms", "service CPU µs", "nginx CPU µs",
                        "reached the service", "all 200"], rows),
        "",
        f"Cache hits through nginx: {hit_ratio:.2f}× the requests/s of the service answering them from its own "
        f"image cache, and the service does no work for them. Cache misses through nginx: {miss_ratio:.2f}× "
        "the direct requests/s — what the extra hop and writing each image into nginx's cache cost when "
        "every request is a forward pass.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="checkpoint folder (copied first)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load point")
    p.add_argument("--reps", type=int, default=3, help="repetitions (interleaved) for medians and spread")
    p.add_argument("--conns", type=int, default=64, help="wrk connections")
    p.add_argument("--nginx-workers", type=int, default=1, help="nginx worker processes")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 s per point, 1 repetition, prints only")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                   help="write the report into docs/performance.md (default: yes, except with --quick)")
    args = p.parse_args(argv)
    if args.reps < 1 or args.conns < 1 or args.duration <= 0 or args.nginx_workers < 1:
        p.error("--reps, --conns and --nginx-workers must be at least 1, --duration positive")
    if shutil.which("wrk") is None:
        p.error("wrk is not installed (scripts/setup.sh test installs Debian's wrk)")
    binary = nginx_binary()
    if binary is None:
        p.error("nginx is not installed (scripts/setup.sh test installs Debian's nginx)")
    if args.quick:
        args.duration, args.reps = 1.0, 1
    version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
    args.nginx_version = version.split(":", 1)[-1].strip()
    args.header = machine_lines("cpu")
    res = run(args)
    publish("proxy", report(args, res), args.write, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
