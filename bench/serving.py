"""Serving benchmark: ganserve against the naive baseline, on this machine, in one run.

    python bench/serving.py                 # the full run (~11 min): writes the tables into docs/performance.md
    python bench/serving.py --quick         # a smoke run (~20 s): prints the tables only

What it measures, in this order:

1. the two ceilings of the work, in-process: the generator's batched forward pass (images/s
   at batch 64 with 1 and with 2 torch threads, and one single-threaded pass per core side by
   side at 8…64 rows) and, separately, the PNG/GIF encode costs;
2. both servers under uvicorn, loaded by ``wrk`` (else a small asyncio client) with random
   labels and seeds at 1, 8, 64 and 256 connections — ganserve as ``python -m app`` starts it
   (its default: one process per core on a CPU box) — plus the no-op ceiling (ganserve's
   cheapest route, ``/healthz``, at 64 connections with the same load generator), and at 64
   connections ganserve in one process, with and without its fast path. Repetitions
   interleave the servers, so slow drift of the machine hits them alike;
3. a 48-frame interpolation GIF against 48 single-image requests;
4. the peers (``## Peers`` of docs/performance.md): ganserve as ``python -m app`` starts it against
   LitServe (``bench/litserve_server.py``: the same checkpoint reader, dynamic batching with
   ganserve's max batch and wait, one torch thread per worker, at its best worker count here) and
   the naive server, at 1 and 64 connections. One server runs at a time; repetitions interleave.
   ``--peers-only`` runs just this part.

``--forward-ratio`` runs only the comparison that matters when the forward pass dominates (a 64×64
colour generator such as ``emoji-cgan``): ganserve's ``/generate`` (``python -m app``) at ``--conns``
against the raw batched forward pass of the same generator (the fastest of batch 64 on 1 and 2
threads and the side-by-side passes), the two interleaved in each repetition; its section of
docs/performance.md is ``serving-<checkpoint name>``:

    python bench/serving.py --forward-ratio --checkpoint checkpoints/emoji-cgan --conns 64

The limit of the machine for this work is 1 / (1/no-op req/s + 1/raw batched images/s), with
the fastest forward pass measured — whatever its batch size or threads.
Random seeds (0…2^31−2) make ganserve's cache of seeded images (512 entries) practically
never hit; the cache hit count is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from app.settings import usable_cores
from bench.common import (
    ROOT,
    command_line,
    descendants,
    free_port,
    load_average,
    machine_lines,
    markdown_table,
    median,
    proc_cpu_seconds,
    publish,
    spread,
)
from bench.loadgen import ALL_SEEDS, LoadResult, fetch_all, have_wrk, run_async, run_load

DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "mnist-cgan"
GIF_FRAMES = 48
# Rows of the side-by-side passes: on a CPU the fastest is rarely the largest (cache), so the limit
# takes the best of several.
PARALLEL_BATCHES = (8, 16, 24, 32, 48, 64)
# Seeds of the cache-hit points: 40 × 10 classes = 400 different requests, within the image cache's
# default 512 entries — after the warm-up every one is answered from the cache.
CACHED_SEEDS = 40


# --- the checkpoint ---------------------------------------------------------------------------


def prepare_checkpoint(src: Path, dest_root: Path) -> tuple[Path, str]:
    """A stable copy of ``src`` in ``dest_root`` (a training run may rewrite ``src`` meanwhile);
    a random-init generator of the shipped architecture when ``src`` does not exist."""
    from training.checkpoint import CheckpointError, load_generator, save_checkpoint

    if not (src / "config.json").exists():
        from training.models import build_generator

        kwargs = {"z_dim": 100, "num_classes": 10, "channels": 1, "resolution": 28, "ngf": 64,
                  "upsample": "convT", "bn": "before-act"}
        torch.manual_seed(0)
        gen = build_generator("DCGenerator", kwargs).eval()
        names = [str(i) for i in range(10)]
        save_checkpoint(dest_root / "bench-cgan", gen, {
            "name": "bench-cgan", "family": "cgan", "description": "random-init generator of the shipped shape",
            "generator": {"class": "DCGenerator", "kwargs": kwargs}, "z_dim": 100, "num_classes": 10,
            "class_names": names, "image": {"channels": 1, "height": 28, "width": 28}, "sampleable": True,
            "dataset": {"name": "synthetic", "num_images": 0, "class_names": names},
            "training": {"command": "bench", "epochs": 0, "seconds": 0.0, "seed": 0, "git_commit": None},
            "metrics": {}})
        return dest_root / "bench-cgan", f"random-init stand-in for {src.name} (not found)"
    dest = dest_root / src.name
    for _ in range(20):  # the folder may be mid-rewrite: copy until the copy verifies
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest)
        try:
            _, cfg = load_generator(dest)
            return dest, f"{src.relative_to(ROOT) if src.is_relative_to(ROOT) else src} " \
                         f"(copy; {cfg.training.epochs} epochs)"
        except CheckpointError:
            time.sleep(0.5)
    raise SystemExit(f"{src}: could not copy a consistent checkpoint")


# --- in-process ceilings --------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_rate(path: Path, device: torch.device, batch: int, threads: int, seconds: float,
                 served: bool = True, workers: int = 1) -> float:
    """Images/s of the generator's forward pass alone at ``batch`` (inference mode, ``threads`` torch
    threads), as ganserve runs it (``served``: after ``prepare_for_inference``) or as loaded; with
    ``workers`` > 1, that many passes side by side in as many Python threads (as ganserve's workers)."""
    import threading

    from app.inference import prepare_for_inference
    from training.checkpoint import load_generator

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g, cfg = load_generator(path, device)
        if served:
            g = prepare_for_inference(g)
        z = torch.randn(batch, cfg.z_dim, device=device)
        y = torch.randint(0, max(cfg.num_classes, 1), (batch,), device=device) if cfg.num_classes else None
        counts = [0] * workers
        start_line = threading.Barrier(workers + 1)

        def loop(i: int, until: list[float]) -> None:
            torch.set_num_threads(threads)
            with torch.inference_mode():
                for _ in range(3):
                    g(z, y)
                start_line.wait()
                while time.perf_counter() < until[0]:
                    g(z, y)
                    counts[i] += 1
                _sync(device)

        until = [float("inf")]
        pool = [threading.Thread(target=loop, args=(i, until)) for i in range(workers)]
        for t in pool:
            t.start()
        start_line.wait()
        start = time.perf_counter()
        until[0] = start + seconds
        for t in pool:
            t.join()
        return sum(counts) * batch / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def encode_costs(path: Path, seconds: float) -> dict[str, float]:
    """µs per single-image PNG (scale 1 and 4; the mean over the 48 images of seeds 0–47, so that runs
    compare: a PNG's cost moves with the image), ms per 48-frame GIF (scale 1 and 4)."""
    from app.imaging import encode_gif, encode_grid
    from training.checkpoint import load_generator
    from training.images import to_uint8
    from training.latent import latents

    g, cfg = load_generator(path)
    with torch.inference_mode():
        labels = torch.arange(GIF_FRAMES) % cfg.num_classes if cfg.num_classes else None
        frames = to_uint8(g(latents(list(range(GIF_FRAMES)), cfg.z_dim), labels))

    def per_call(fn, *args) -> float:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 3:
            fn(*args)
            n += 1
        return (time.perf_counter() - start) / n

    def per_image(scale: int) -> float:
        return per_call(lambda: [encode_grid(frames[i : i + 1], scale) for i in range(GIF_FRAMES)]) / GIF_FRAMES

    return {
        "png1_us": per_image(1) * 1e6,
        "png4_us": per_image(4) * 1e6,
        "gif1_ms": per_call(encode_gif, frames, 1, 12) * 1e3,
        "gif4_ms": per_call(encode_gif, frames, 4, 12) * 1e3,
    }


# --- servers --------------------------------------------------------------------------------


UVICORN_FLAGS = ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]


@dataclass
class Server:
    name: str
    app: str
    env: dict[str, str]
    ready_path: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    prefix: list[str] = field(default_factory=lambda: [sys.executable, "-m"])
    processes: int = 1  # 0: `python -m app` (ganserve's launcher, its default process count); 1: uvicorn
    command: list[str] | None = None  # another server's own command line ({port} filled in)
    post: bool = False  # load it with POST + JSON (LitServe's /predict) rather than GET + query

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> None:
        self.log = log_dir / f"{self.name}.log"
        cmd = [*self.prefix, "uvicorn", self.app, "--port", str(self.port), *UVICORN_FLAGS]
        if self.command is not None:
            cmd = [part.format(port=self.port) for part in self.command]
        elif self.processes != 1:
            cmd = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(self.port)]
            cmd += ["--processes", str(self.processes)] if self.processes > 1 else []
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **self.env}, stdout=out,
                                         stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.name} not ready after {timeout}s: {self.log_tail()}")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return str(r.read().decode())

    def thread_cpu(self) -> dict[int, float]:
        """CPU seconds (user + system) used so far by each thread of the server process and of the
        processes it started (Linux)."""
        assert self.proc is not None
        out: dict[int, float] = {}
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    out[int(task.name)] = proc_cpu_seconds(task / "stat")
                except OSError:
                    continue
        return out

    def load(self, tool: str, path: str, classes: int, conns: int, duration: float,
             seeds: int = ALL_SEEDS, pngs: list[Path] | None = None) -> LoadResult:
        """One load point; records the server's CPU time per thread and the load generator's CPU time.
        ``pngs``: POST these PNG files in turn (image-in routes) instead of seeded GETs."""
        assert self.proc is not None
        before, client_before = self.thread_cpu(), _children_cpu()
        r = run_load(tool, self.base, path, classes, conns, duration, seeds, post=self.post, pngs=pngs)
        after = self.thread_cpu()
        delta = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
        main = delta.pop(self.proc.pid, 0.0)
        worker = max(delta.values(), default=0.0)
        r.server_cpu_s = main + sum(delta.values())
        if self.processes == 1:  # else there are several event loops: only the total means something
            r.thread_cpu_s = {"event loop (main thread)": main, "busiest other thread": worker,
                              "all other threads": sum(delta.values()) - worker}
        if tool == "wrk":
            r.client_cpu_s = _children_cpu() - client_before
        return r

    def log_tail(self) -> str:
        return self.log.read_text()[-2000:] if self.log and self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            children = descendants(self.proc.pid)
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for pid in children:  # a server's worker processes that outlived it (LitServe's)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def scrape(server: Server, model: str) -> dict[str, float]:
    """Mean batch size and cache lookups from ganserve's /metrics."""
    text = server.get("/metrics")

    def value(pattern: str) -> float:
        m = re.search(pattern, text, re.M)
        return float(m.group(1)) if m else 0.0

    q = re.escape(f'model="{model}"')
    return {
        "batches": value(rf"^ganserve_batch_size_count{{{q}}} (\S+)"),
        "rows": value(rf"^ganserve_batch_size_sum{{{q}}} (\S+)"),
        "requests_in_batches": value(rf"^ganserve_batch_requests_sum{{{q}}} (\S+)"),
        "cache_hit": value(r'^ganserve_cache_total{result="hit"} (\S+)'),
        "cache_miss": value(r'^ganserve_cache_total{result="miss"} (\S+)'),
    }


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Results:
    noop: list[LoadResult] = field(default_factory=list)
    runs: dict[tuple[str, int], list[LoadResult]] = field(default_factory=dict)
    forward: dict[int, list[float]] = field(default_factory=dict)  # threads → images/s at batch 64
    forward_loaded: dict[int, list[float]] = field(default_factory=dict)  # the same, generator as loaded
    forward1: dict[int, list[float]] = field(default_factory=dict)  # threads → images/s at batch 1
    # (passes side by side, 1 torch thread each; rows per pass) → images/s
    forward_parallel: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    fastapi_only: dict[str, list[LoadResult]] = field(default_factory=dict)  # ganserve without its fast path
    single: dict[str, list[LoadResult]] = field(default_factory=dict)  # ganserve in one process (uvicorn)
    # /generate answered from the image cache (few seeds): the route without the model; "default" / "single"
    cached: dict[str, list[LoadResult]] = field(default_factory=dict)
    processes: int = 1  # ganserve's default process count here (`python -m app`)
    encode: dict[str, float] = field(default_factory=dict)
    interp: dict[str, list[float]] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    profile: list[tuple[str, float]] | None = None
    peers: Peers | None = None
    ratio: Ratio | None = None  # --forward-ratio


def default_processes(env: dict[str, str]) -> int:
    """How many processes ``python -m app`` starts with this environment (its ``auto``)."""
    from app.__main__ import auto_processes

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return auto_processes()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def interpolation_timings(ganserve: Server, naive: Server, classes: int, reps: int) -> dict[str, list[float]]:
    """Seconds: one 48-frame GIF vs 48 single images (one connection in a row, or 48 at once)."""
    rng = random.Random(1)
    out: dict[str, list[float]] = {}

    def seeds() -> tuple[int, int, int]:
        return rng.randrange(2**31), rng.randrange(2**31), rng.randrange(classes) if classes else 0

    def add(key: str, base: str, paths: list[str], concurrency: int) -> None:
        seconds, _, statuses = run_async(fetch_all(base, paths, concurrency))
        if set(statuses) != {200}:
            raise SystemExit(f"{key}: unexpected statuses {dict(statuses)}")
        out.setdefault(key, []).append(seconds)

    lab = "&label={}" if classes else ""
    for _ in range(reps):
        for scale in (1, 4):
            a, b, c = seeds()
            gif = f"/interpolate?from_seed={a}&to_seed={b}&frames={GIF_FRAMES}&fps=24&scale={scale}" + lab.format(c)
            add(f"gif{scale}", ganserve.base, [gif], 1)
        a, _, c = seeds()
        singles = [f"/generate?seed={a + i}" + lab.format(c) for i in range(GIF_FRAMES)]
        add("singles_seq", ganserve.base, singles, 1)
        a, _, c = seeds()
        singles = [f"/generate?seed={a + i}" + lab.format(c) for i in range(GIF_FRAMES)]
        add("singles_par", ganserve.base, singles, GIF_FRAMES)
        a, _, c = seeds()
        singles = [f"/generate?seed={a + i}" + lab.format(c) for i in range(GIF_FRAMES)]
        add("naive_seq", naive.base, singles, 1)
    return out


def run(args: argparse.Namespace) -> Results:
    res = Results()
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    tool = args.loadgen if args.loadgen != "auto" else ("wrk" if have_wrk() else "python")
    args.tool = tool
    tmp = Path(tempfile.mkdtemp(prefix="ganserve-bench-"))
    try:
        ckpt, args.ckpt_note = prepare_checkpoint(Path(args.checkpoint).resolve(), tmp)
        from training.checkpoint import read_config

        cfg = read_config(ckpt)
        classes = cfg.num_classes
        print(f"checkpoint: {args.ckpt_note}; load generator: {tool}; device: {device}", flush=True)
        if args.forward_ratio:
            res.ratio = run_forward_ratio(args, tmp, ckpt, classes, device)
            return res
        if not args.peers_only:
            run_own(args, res, tmp, ckpt, classes, device)
        if args.peers:
            res.peers = run_peers(args, tmp, ckpt, classes, device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def run_own(args: argparse.Namespace, res: Results, tmp: Path, ckpt: Path, classes: int,
            device: torch.device) -> None:
    """Sections 1–3: ceilings, ganserve's configurations and the naive server, the interpolation."""
    tool = args.tool
    # 1. in-process ceilings (nothing else of ours running)
    fwd_seconds = 0.3 if args.quick else 2.0
    threads_list = [1, 2] if device.type == "cpu" else [torch.get_num_threads()]
    for _ in range(args.reps):
        for t in threads_list:
            res.forward.setdefault(t, []).append(forward_rate(ckpt, device, 64, t, fwd_seconds))
            res.forward_loaded.setdefault(t, []).append(forward_rate(ckpt, device, 64, t, fwd_seconds, False))
            res.forward1.setdefault(t, []).append(forward_rate(ckpt, device, 1, t, fwd_seconds / 2))
        if device.type == "cpu" and usable_cores() > 1:  # ganserve's workers: passes side by side
            w = usable_cores()
            for b in PARALLEL_BATCHES[:: 2 if args.quick else 1]:
                res.forward_parallel.setdefault((w, b), []).append(forward_rate(ckpt, device, b, 1, fwd_seconds,
                                                                                workers=w))
    res.encode = encode_costs(ckpt, 0.2 if args.quick else 1.0)
    print("forward images/s at batch 64:", {t: f"{median(v):.0f}" for t, v in res.forward.items()}, flush=True)

    # 2. the servers: ganserve as `python -m app` starts it (one process per core on a CPU box), and,
    # at 64 connections only, in one process (`uvicorn app.main:app`) with and without its fast path.
    env = {"GANSERVE_CHECKPOINTS": str(tmp), "GANSERVE_DEFAULT_MODEL": ckpt.name, "GANSERVE_DEVICE": str(device),
           "GANSERVE_LOG_LEVEL": "WARNING"}
    res.processes = default_processes(env)
    ganserve = Server("ganserve", "app.main:app", env, "/readyz", processes=0)
    naive = Server("naive", "bench.naive_server:app", {"NAIVE_CHECKPOINT": str(ckpt)}, "/healthz")
    single = Server("ganserve-1", "app.main:app", dict(env), "/readyz")
    plain = Server("ganserve-fastapi", "app.main:app", {**env, "GANSERVE_FAST_PATH": "false"}, "/readyz")
    servers = [naive, ganserve, plain] + ([single] if res.processes > 1 else [])
    try:
        for s in servers:
            s.start(tmp)
        for s in servers:
            s.wait_ready()
        warm = 1.0 if args.quick else 3.0
        for s in servers:  # warm-up: first requests allocate, JIT-select kernels, fill pools
            s.load(tool, "/generate", classes, 8, warm)
        for s in (ganserve, single):  # … and the image caches, for the cache-hit points
            if s in servers:
                s.load(tool, "/generate", classes, 64, warm, CACHED_SEEDS)
        for rep in range(args.reps):
            res.noop.append(ganserve.load(tool, "/healthz", classes, 64, args.duration))
            for path in ("/healthz", "/generate"):
                r = plain.load(tool, path, classes, 64, args.duration)
                res.fastapi_only.setdefault(path, []).append(r)
                print(f"rep {rep + 1}/{args.reps} ganserve without fast path {path} c=64: {r.rps:.0f} req/s, "
                      f"{r.cpu_us:.0f} µs CPU/req", flush=True)
            if single in servers:
                for path in ("/healthz", "/generate"):
                    r = single.load(tool, path, classes, 64, args.duration)
                    res.single.setdefault(path, []).append(r)
                    print(f"rep {rep + 1}/{args.reps} ganserve in 1 process {path} c=64: {r.rps:.0f} "
                          f"req/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, {r.cpu_us:.0f} µs CPU/req",
                          flush=True)
            for key, s in (("default", ganserve), ("single", single)):
                if s not in servers:
                    continue
                r = s.load(tool, "/generate", classes, 64, args.duration, CACHED_SEEDS)
                res.cached.setdefault(key, []).append(r)
                print(f"rep {rep + 1}/{args.reps} {s.name} /generate from its cache c=64: {r.rps:.0f} req/s, "
                      f"{r.cpu_us:.0f} µs CPU/req", flush=True)
            for conns in args.conns:
                for s in (naive, ganserve):
                    r = s.load(tool, "/generate", classes, conns, args.duration)
                    res.runs.setdefault((s.name, conns), []).append(r)
                    print(f"rep {rep + 1}/{args.reps} {s.name:8s} c={conns:3d}: {r.rps:7.0f} req/s  "
                          f"p50 {r.p50_ms:7.1f} ms  p99 {r.p99_ms:7.1f} ms  {r.cpu_us:6.0f} µs CPU/req  "
                          f"statuses {r.statuses}"
                          + (f"  socket errors {r.socket_errors}" if r.socket_errors else ""), flush=True)
            print(f"rep {rep + 1}/{args.reps} no-op /healthz c=64: {res.noop[-1].rps:.0f} req/s, "
                  f"{res.noop[-1].cpu_us:.0f} µs CPU/req", flush=True)
        res.stats = scrape(ganserve, ckpt.name)
        res.interp = interpolation_timings(ganserve, naive, classes, 1 if args.quick else 5)
    finally:
        for s in servers:
            s.stop()
    if args.profile:
        res.profile = profile_ganserve(args, tmp, ckpt, classes, device)


# --- served against the raw forward pass ----------------------------------------------------------


FORWARD_RATIO_TARGET = 0.85


@dataclass
class Ratio:
    forward: dict[str, list[float]] = field(default_factory=dict)  # variant → images/s per repetition
    served: dict[int, list[LoadResult]] = field(default_factory=dict)  # connections → load points
    processes: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


def forward_variants(ckpt: Path, device: torch.device, seconds: float) -> dict[str, float]:
    """Images/s of each way of running the raw batched forward pass that ganserve could use."""
    out = {f"batch 64, {t} torch thread(s)": forward_rate(ckpt, device, 64, t, seconds)
           for t in ([1, 2] if device.type == "cpu" else [torch.get_num_threads()])}
    w = usable_cores()
    if device.type == "cpu" and w > 1:
        for b in (16, 32, 64):
            out[f"batch {b}, {w} passes side by side (1 thread each)"] = forward_rate(ckpt, device, b, 1, seconds,
                                                                                       workers=w)
    return out


def run_forward_ratio(args: argparse.Namespace, tmp: Path, ckpt: Path, classes: int, device: torch.device) -> Ratio:
    """ganserve's ``/generate`` against the raw forward pass, interleaved: each repetition measures the
    passes (server idle) and then the server (no pass running), so drift of the machine hits both."""
    env = {"GANSERVE_CHECKPOINTS": str(tmp), "GANSERVE_DEFAULT_MODEL": ckpt.name, "GANSERVE_DEVICE": str(device),
           "GANSERVE_LOG_LEVEL": "WARNING"}
    out = Ratio(processes=default_processes(env))
    server = Server("ganserve", "app.main:app", env, "/readyz", processes=0)
    seconds = 0.5 if args.quick else 3.0
    try:
        server.start(tmp)
        server.wait_ready()
        server.load(args.tool, "/generate", classes, max(args.conns), 1.0 if args.quick else 5.0)  # warm-up
        for rep in range(args.reps):
            for name, rate in forward_variants(ckpt, device, seconds).items():
                out.forward.setdefault(name, []).append(rate)
            for conns in args.conns:
                r = server.load(args.tool, "/generate", classes, conns, args.duration)
                out.served.setdefault(conns, []).append(r)
                for status, n in r.statuses.items():
                    out.statuses[str(status)] = out.statuses.get(str(status), 0) + n
                print(f"rep {rep + 1}/{args.reps} /generate c={conns}: {r.rps:.0f} req/s, p50 {r.p50_ms:.1f} ms, "
                      f"p99 {r.p99_ms:.1f} ms; raw forward best so far "
                      f"{max(median(v) for v in out.forward.values()):.0f} images/s", flush=True)
    finally:
        server.stop()
    return out


def ratio_report(args: argparse.Namespace, ratio: Ratio) -> str:
    best_name = max(ratio.forward, key=lambda k: median(ratio.forward[k]))
    raw = median(ratio.forward[best_name])
    lines = [
        f"Command: `{command_line()}` — {args.ckpt_note}; load generator: "
        + ("`wrk -t1` with `bench/generate.lua`" if args.tool == "wrk" else "the asyncio client in `bench/loadgen.py`")
        + f", random labels and seeds; {args.duration:g} s per point, {args.reps} repetition(s), each measuring "
          "the raw forward passes and then the server; values are medians (min–max over repetitions).",
        "",
        *args.header,
        f"- load average after the run: {load_average()}",
        f"- ganserve: `python -m app` ({ratio.processes} process(es), its default here); model workers: "
        f"{_workers(str(args.device_used), ratio.processes)}",
        f"- responses: {', '.join(f'{k}: {v}' for k, v in sorted(ratio.statuses.items()))}",
        "",
        markdown_table(["what", "images/s"], [
            *[[f"raw forward as served, {name}" + (" (the fastest)" if name == best_name else ""), spread(v)]
              for name, v in ratio.forward.items()],
            *[[f"`GET /generate`, {c} connections (req/s = images/s)", spread([r.rps for r in rs])]
              for c, rs in ratio.served.items()],
        ]),
        "",
        markdown_table(["target", "measured", "met"], [
            [f"`/generate` at {c} connections ≥ {FORWARD_RATIO_TARGET:g} × the raw forward pass",
             f"{median([r.rps for r in rs]):.0f} / {raw:.0f} = {median([r.rps for r in rs]) / raw:.2f}",
             _ok(median([r.rps for r in rs]) / raw >= FORWARD_RATIO_TARGET)]
            for c, rs in ratio.served.items()
        ]),
    ]
    return "\n".join(lines)


# --- the peers -------------------------------------------------------------------------------------


PEER_CONNS = (1, 64)


@dataclass
class Peers:
    settings: dict[str, str] = field(default_factory=dict)  # server → its settings, as reported
    runs: dict[tuple[str, int], list[LoadResult]] = field(default_factory=dict)
    # (workers, fast_queue) → its c=64 point
    litserve_configs: dict[tuple[int, bool], list[LoadResult]] = field(default_factory=dict)
    missing: str | None = None  # why LitServe was not run


def have_litserve() -> bool:
    try:
        import litserve  # noqa: F401
    except ImportError:
        return False
    return True


def litserve(ckpt: Path, workers: int, fast_queue: bool, max_batch: int, wait_ms: float) -> Server:
    env = {"LITSERVE_CHECKPOINT": str(ckpt), "LITSERVE_WORKERS": str(workers), "LITSERVE_MAX_BATCH": str(max_batch),
           "LITSERVE_WAIT_MS": str(wait_ms), "LITSERVE_THREADS": "1", "LITSERVE_FAST_QUEUE": str(int(fast_queue))}
    return Server(f"LitServe ({workers}w{', fast_queue' if fast_queue else ''})", "", env, "/health",
                  command=[sys.executable, str(ROOT / "bench" / "litserve_server.py"), "--port", "{port}"], post=True)


def measure(server: Server, tmp: Path, tool: str, path: str, classes: int, conns: tuple[int, ...], duration: float,
            warm: float) -> dict[int, LoadResult]:
    """Start ``server``, warm it up, load it at each connection count, stop it."""
    server.start(tmp)
    try:
        server.wait_ready()
        server.load(tool, path, classes, 8, warm)
        out = {}
        for c in conns:
            r = out[c] = server.load(tool, path, classes, c, duration)
            print(f"  {server.name:28s} c={c:3d}: {r.rps:7.0f} req/s  p50 {r.p50_ms:7.1f} ms  p99 {r.p99_ms:7.1f} ms  "
                  f"{r.cpu_us:6.0f} µs CPU/req  statuses {r.statuses}", flush=True)
        return out
    finally:
        server.stop()


def run_peers(args: argparse.Namespace, tmp: Path, ckpt: Path, classes: int, device: torch.device) -> Peers:
    """ganserve (``python -m app``, its defaults) vs LitServe vs the naive server, one at a time, at 1 and 64
    connections; LitServe first at each worker count from 1 to the cores, the best at 64 connections kept."""
    from app.batcher import default_max_batch, worker_plan
    from app.settings import Settings

    peers = Peers()
    settings = Settings(_env_file=None)
    max_batch = settings.max_batch or default_max_batch(device)
    wait_ms = settings.max_wait_ms
    env = {"GANSERVE_CHECKPOINTS": str(tmp), "GANSERVE_DEFAULT_MODEL": ckpt.name, "GANSERVE_DEVICE": str(device),
           "GANSERVE_LOG_LEVEL": "WARNING"}
    processes = default_processes(env)
    workers, threads = worker_plan(device, cores=max(1, usable_cores() // processes))
    peers.settings["ganserve"] = (
        f"`python -m app` (its defaults): {processes} process(es) × {workers} model worker(s) × "
        f"{threads} torch thread(s); micro-batches of ≤ {max_batch} rows, ≤ {wait_ms:g} ms wait; `GET /generate`")
    peers.settings["naive"] = "`uvicorn bench.naive_server:app`: 1 process, a sync route (FastAPI's thread pool), " \
                              "one forward pass per request, torch's default threads; `GET /generate`"
    warm = 1.0 if args.quick else 3.0
    servers = {"ganserve": Server("ganserve", "app.main:app", env, "/readyz", processes=0),
               "naive": Server("naive", "bench.naive_server:app", {"NAIVE_CHECKPOINT": str(ckpt)}, "/healthz")}
    if not have_litserve():
        peers.missing = "litserve is not installed (`pip install -e '.[bench]'`): LitServe not measured"
        print(peers.missing, flush=True)
    else:
        # Its best configuration here at 64 connections: worker processes 1…cores, its queues (multiprocessing
        # or ZeroMQ, `fast_queue`).
        for w in range(1, max(1, usable_cores()) + 1):
            for fq in (False, True):
                r = measure(litserve(ckpt, w, fq, max_batch, wait_ms), tmp, args.tool, "/predict", classes, (64,),
                            args.duration, warm)
                peers.litserve_configs.setdefault((w, fq), []).append(r[64])
        best = max(peers.litserve_configs, key=lambda k: median([r.rps for r in peers.litserve_configs[k]]))
        peers.settings["LitServe"] = (
            f"`bench/litserve_server.py`, litserve {_version('litserve')}: {best[0]} worker process(es) × 1 torch "
            f"thread, as many API server processes (its default), `fast_queue={best[1]}` (its best here of 1–"
            f"{max(1, usable_cores())} workers × both queues); dynamic batching `max_batch_size={max_batch}`, "
            f"`batch_timeout={wait_ms / 1000:g}` s; `POST /predict` with a JSON body")
        servers["LitServe"] = litserve(ckpt, best[0], best[1], max_batch, wait_ms)
    for rep in range(args.reps):
        print(f"peers, repetition {rep + 1}/{args.reps}", flush=True)
        for name, server in servers.items():
            path = "/predict" if server.post else "/generate"
            for c, r in measure(server, tmp, args.tool, path, classes, PEER_CONNS, args.duration, warm).items():
                peers.runs.setdefault((name, c), []).append(r)
    return peers


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def peers_report(args: argparse.Namespace, peers: Peers) -> str:
    lines = [
        f"Command: `{command_line()}` — load generator: "
        + ("`wrk -t1` with `bench/generate.lua`" if args.tool == "wrk" else "the asyncio client in `bench/loadgen.py`")
        + f"; random labels and seeds; {args.duration:g} s per point, {args.reps} repetition(s), one server at a "
          "time, repetitions interleaved; values are medians (min–max over repetitions). The same checkpoint, read "
          "by `training.checkpoint.load_generator` in every server; the same seed rule and PNG encoder.",
        "",
        *args.header,
        f"- load average after the run: {load_average()}",
        "",
        markdown_table(["server", "settings"], [[k, v] for k, v in peers.settings.items()]),
        "",
    ]
    if peers.missing:
        lines += [f"*{peers.missing}.*", ""]
    if peers.litserve_configs:
        lines += ["LitServe's configurations (64 connections; the best is kept):", "",
                  markdown_table(["workers", "fast_queue", "req/s", "p50 ms", "p99 ms"], [
                      [str(w), str(fq), spread([r.rps for r in rs]), spread([r.p50_ms for r in rs], "{:.1f}"),
                       spread([r.p99_ms for r in rs], "{:.1f}")]
                      for (w, fq), rs in sorted(peers.litserve_configs.items())]),
                  ""]
    rows = []
    for c in PEER_CONNS:
        for name in ("ganserve", "LitServe", "naive"):
            rs = peers.runs.get((name, c))
            if rs:
                rows.append([str(c), name, spread([r.rps for r in rs]), spread([r.p50_ms for r in rs], "{:.1f}"),
                             spread([r.p99_ms for r in rs], "{:.1f}"), f"{median([r.cpu_us for r in rs]):.0f}",
                             str(sum(r.other_errors + r.rejected for r in rs))])
    lines.append(markdown_table(["conns", "server", "req/s", "p50 ms", "p99 ms", "server CPU µs/req",
                                 "errors and 503s"], rows))

    def med(name: str, c: int, attr: str = "rps") -> float:
        return median([getattr(r, attr) for r in peers.runs.get((name, c), [])])

    if peers.runs.get(("LitServe", 64)) and peers.runs.get(("LitServe", 1)):
        g64, l64 = med("ganserve", 64), med("LitServe", 64)
        g1, l1 = med("ganserve", 1), med("LitServe", 1)
        lines += ["", "**Targets** (issue 32)", "", markdown_table(["target", "measured", "met"], [
            ["64 conns: ganserve ≥ 2× LitServe's req/s", f"{g64:.0f} / {l64:.0f} = {g64 / l64:.2f}×",
             _ok(g64 >= 2 * l64)],
            ["1 conn: ganserve no worse than LitServe (req/s)", f"{g1:.0f} vs {l1:.0f}", _ok(g1 >= l1)],
        ])]
        c64, cl64 = med("ganserve", 64, "cpu_us"), med("LitServe", 64, "cpu_us")
        lines += ["", f"Server CPU per answered request at 64 connections, which other load on the machine hardly "
                      f"moves: ganserve {c64:.0f} µs, LitServe {cl64:.0f} µs ({cl64 / c64:.1f}× ganserve's). "
                      "Requests per second follow it only when each server gets the whole machine."]
    return "\n".join(lines)


# --- the profile ------------------------------------------------------------------------------------

# Where the event loop's time inside request handling goes: (group, path fragments), first match wins.
PROFILE_GROUPS = [
    ("uvicorn: HTTP parsing and writing", ("uvicorn/", "httptools", "h11")),
    ("batcher hand-off (queue, futures, timers)", ("app/batcher", "queue", "asyncio/futures", "asyncio/tasks",
                                                   "asyncio/events")),
    ("ganserve route code (model, label, latents, ETag, headers)", ("app/routes", "app/generation", "app/service",
                                                                    "app/fastpath",
                                                                    "training/", "json/", "hashlib", "numpy",
                                                                    "torch", "secrets", "random", "urllib/parse.py:q")),
    ("middleware (metrics, limits, catch-all; FastAPI/Starlette exception and telemetry layers)",
     ("app/main", "app/metrics", "prometheus_client", "starlette/middleware", "_exception_handler", "fastapi/_body",
      "fastapi/telemetry", "fastapi/middleware", "opentelemetry", "<frozen os>", "_collections_abc",
      "starlette/applications", "fastapi/applications")),
    ("FastAPI routing and query-parameter validation", ("fastapi/", "starlette/", "pydantic", "typing", "urllib/",
                                                        "anyio", "inspect")),
]


def summarise_profile(session_path: Path) -> list[tuple[str, float]]:
    """Shares of the main thread's busy time (request handling, HTTP callbacks, batcher) by group."""
    from pyinstrument.session import Session

    root = Session.load(str(session_path)).root_frame()
    assert root is not None
    totals: dict[str, float] = {}

    def group_of(path: str) -> str:
        for name, parts in PROFILE_GROUPS:
            if any(p in path for p in parts):
                return name
        return "other"

    def walk(frame, inside: bool, parent_group: str) -> None:
        path = f"{frame.file_path or ''}"
        starts = frame.function == "run_asgi" or "uvicorn/protocols" in path or "app/batcher" in path
        inside = inside or starts
        builtin = not path or path.startswith("<built-in")
        group = parent_group if builtin else group_of(path)
        if inside:
            self_time = frame.time - sum(c.time for c in frame.children)
            totals[group] = totals.get(group, 0.0) + self_time
        for child in frame.children:
            walk(child, inside, group)

    walk(root, False, "other")
    busy = sum(totals.values()) or 1.0
    return sorted(((k, v / busy) for k, v in totals.items()), key=lambda kv: -kv[1])


def profile_ganserve(args: argparse.Namespace, tmp: Path, ckpt: Path, classes: int, device: torch.device
                     ) -> list[tuple[str, float]] | None:
    """Run ganserve under pyinstrument (main thread: the event loop) at 64 connections and summarise."""
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        print("pyinstrument is not installed: no profile", flush=True)
        return None
    session = tmp / "ganserve.pyisession"
    server = Server("ganserve-profiled", "app.main:app", {
        "GANSERVE_CHECKPOINTS": str(tmp), "GANSERVE_DEFAULT_MODEL": ckpt.name, "GANSERVE_DEVICE": str(device),
        "GANSERVE_LOG_LEVEL": "WARNING"}, "/readyz")
    server.prefix = [sys.executable, "-m", "pyinstrument", "-r", "session", "-o", str(session), "-i", "0.0005", "-m"]
    server.start(tmp)
    try:
        server.wait_ready()
        server.load(args.tool, "/generate", classes, 64, 1.0)
        r = server.load(args.tool, "/generate", classes, 64, args.duration)
        print(f"profiled ganserve c=64: {r.rps:.0f} req/s (under the profiler)", flush=True)
    finally:
        if server.proc is not None:
            server.proc.send_signal(2)  # SIGINT: uvicorn shuts down, pyinstrument writes the session
            try:
                server.proc.wait(60)
            except subprocess.TimeoutExpired:
                server.stop()
    return summarise_profile(session) if session.exists() else None


# --- the report ---------------------------------------------------------------------------------


def report(args: argparse.Namespace, res: Results, device: str) -> str:
    noop = [r.rps for r in res.noop]
    candidates = [*res.forward.values(), *res.forward_loaded.values(), *res.forward_parallel.values()]
    raw = max(candidates, key=median)  # the fastest way we know to run the forward pass
    limit = 1 / (1 / median(noop) + 1 / median(raw))
    lines = [
        f"Command: `{command_line()}` — load generator: "
        + ("`wrk -t1` with `bench/generate.lua`" if args.tool == "wrk" else "the asyncio client in `bench/loadgen.py`")
        + f"; {args.duration:g} s per point, {args.reps} repetition(s), interleaved; values are medians "
          "(min–max over repetitions).",
        "",
        *args.header,
        f"- load average after the run: {load_average()}",
        f"- checkpoint: {args.ckpt_note}; naive: `python -m uvicorn bench.naive_server:app … "
        f"{' '.join(UVICORN_FLAGS)}`; ganserve: `python -m app` ({res.processes} process(es), its default here), "
        f"and in one process `python -m uvicorn app.main:app … {' '.join(UVICORN_FLAGS)}` (uvloop + httptools)",
        f"- ganserve's model workers: {_workers(device, res.processes)}",
        "",
        "**Ceilings and the limit** (the same run)",
        "",
        markdown_table(["what", "value"], [
            [f"no-op route (`/healthz` of ganserve, {res.processes} process(es), 64 connections), req/s",
             spread(noop)],
            *[["no-op route of ganserve in 1 process, req/s", spread([r.rps for r in res.single["/healthz"]])]
              for _ in [0] if res.single.get("/healthz")],
            *[[f"raw batched forward as served, batch 64, {t} torch thread(s), images/s", spread(v)]
              for t, v in res.forward.items()],
            *[[f"raw batched forward as loaded (no rewrite), batch 64, {t} torch thread(s), images/s", spread(v)]
              for t, v in res.forward_loaded.items()],
            *[[f"raw batched forward as served, batch {b}, {w} passes side by side (1 torch thread each), images/s",
               spread(v)] for (w, b), v in res.forward_parallel.items()],
            *[[f"forward as served at batch 1, {t} torch thread(s), images/s", spread(v)]
              for t, v in res.forward1.items()],
            *[[f"`/generate` answered from ganserve's image cache ({CACHED_SEEDS} seeds × the classes: no forward "
               f"pass, no encode), {n}, req/s", spread([r.rps for r in rs])]
              for n, rs in ((f"{res.processes} process(es)", res.cached.get("default")),
                            ("1 process", res.cached.get("single"))) if rs],
            *[["no-op route with the fast path off (`/healthz` through FastAPI's router), req/s",
               spread([r.rps for r in res.fastapi_only["/healthz"]])] for _ in [0] if res.fastapi_only.get("/healthz")],
            [f"**limit** = 1 / (1/{median(noop):.0f} + 1/{median(raw):.0f}), req/s", f"**{limit:.0f}**"],
            [f"PNG encode of one 28×28 image (mean over seeds 0–{GIF_FRAMES - 1}), scale 1 / scale 4, µs",
             f"{res.encode['png1_us']:.0f} / {res.encode['png4_us']:.0f}"],
            [f"GIF encode of {GIF_FRAMES} frames, scale 1 / scale 4, ms",
             f"{res.encode['gif1_ms']:.1f} / {res.encode['gif4_ms']:.1f}"],
        ]),
        "",
        "**`GET /generate` with random labels and seeds**",
        "",
    ]
    def row(conns: int, name: str, rs: list[LoadResult], of: float = limit) -> list[str]:
        ratio = [r.p99_ms / r.p50_ms for r in rs if r.p50_ms > 0]
        return [str(conns), name, spread([r.rps for r in rs]), spread([r.p50_ms for r in rs], "{:.1f}"),
                spread([r.p99_ms for r in rs], "{:.1f}"), spread(ratio, "{:.1f}"),
                f"{100 * median([r.rps for r in rs]) / of:.0f}%", f"{median([r.cpu_us for r in rs]):.0f}",
                str(sum(r.rejected for r in rs)), str(sum(r.other_errors for r in rs))]

    rows = [row(conns, name, rs) for conns in args.conns for name in ("naive", "ganserve")
            if (rs := res.runs.get((name, conns), []))]
    if res.single.get("/generate"):
        rows.append(row(64, "ganserve, 1 process", res.single["/generate"]))
    if res.fastapi_only.get("/generate"):
        rows.append(row(64, "ganserve, 1 process, fast path off", res.fastapi_only["/generate"]))
    lines.append(markdown_table(["conns", "server", "req/s", "p50 ms", "p99 ms", "p99/p50", "of limit",
                                 "server CPU µs/req", "503s", "other errors"], rows))
    lines += ["", *cpu_table(args, res)]
    st = res.stats
    if st.get("batches"):
        lines += ["", f"ganserve coalesced {st['requests_in_batches']:.0f} requests into {st['batches']:.0f} forward "
                      f"passes (mean {st['rows'] / st['batches']:.1f} images per pass); image cache: "
                      f"{st['cache_hit']:.0f} hits, {st['cache_miss']:.0f} misses (the hits are the cache-hit "
                      "points'; random seeds practically never hit)."]
    lines += ["", *targets(args, res, limit)]
    it = res.interp
    if it:
        lines += ["", f"**Interpolation: one {GIF_FRAMES}-frame GIF vs {GIF_FRAMES} single images** "
                      "(wall time of the whole set, ms; median (min–max))", "",
                  markdown_table(["request(s)", "ms"], [
                      *[[f"ganserve `/interpolate?frames={GIF_FRAMES}` → GIF, scale {k}",
                         spread([1e3 * x for x in it[f"gif{k}"]])] for k in (1, 4)],
                      [f"ganserve {GIF_FRAMES} × `/generate`, one connection, one after another",
                       spread([1e3 * x for x in it["singles_seq"]])],
                      [f"ganserve {GIF_FRAMES} × `/generate`, {GIF_FRAMES} connections at once",
                       spread([1e3 * x for x in it["singles_par"]])],
                      [f"naive {GIF_FRAMES} × `/generate`, one connection, one after another",
                       spread([1e3 * x for x in it["naive_seq"]])],
                  ])]
    if res.profile:
        lines += ["", f"**Profile of ganserve's event loop** at 64 connections (pyinstrument, {args.duration:g} s; "
                      "share of the main thread's busy time in request handling, HTTP callbacks and the batcher; "
                      "the forward passes and PNG encodes run in the model's worker thread and are not in it)", "",
                  markdown_table(["where", "share"], [[k, f"{100 * v:.0f}%"] for k, v in res.profile])]
    return "\n".join(lines)


def _workers(device: str, processes: int) -> str:
    from app.inference import inference_threads, inference_workers

    dev = torch.device(device)

    def plan(cores: int) -> str:
        workers = inference_workers(dev, cores)
        threads = inference_threads(dev, workers, cores)
        return f"{workers} forward pass(es) side by side, " + (f"{threads} torch thread(s) each" if threads
                                                                else "on the device")

    share = max(1, usable_cores() // processes)
    return (f"in each of the default's {processes} process(es) {plan(share)}; in one process {plan(0)} "
            "(`app.inference.inference_workers` / `inference_threads`)")


def cpu_table(args: argparse.Namespace, res: Results, conns: int = 64) -> list[str]:
    """Where the CPU goes at ``conns`` connections: µs per answered request, by thread, and the load generator's."""
    n = f"{res.processes} process(es)"
    points = [(f"no-op `/healthz` (ganserve, {n})", res.noop),
              ("no-op `/healthz` (ganserve, 1 process)", res.single.get("/healthz", [])),
              ("no-op `/healthz` (ganserve, 1 process, fast path off)", res.fastapi_only.get("/healthz", [])),
              (f"`/generate` from the image cache (ganserve, {n})", res.cached.get("default", [])),
              ("`/generate` from the image cache (ganserve, 1 process)", res.cached.get("single", [])),
              ("naive", res.runs.get(("naive", conns), [])),
              (f"ganserve ({n})", res.runs.get(("ganserve", conns), [])),
              ("ganserve, 1 process", res.single.get("/generate", [])),
              ("ganserve, 1 process, fast path off", res.fastapi_only.get("/generate", []))]
    rows = []
    for label, rs in points:
        if not rs:
            continue

        def per_req(get, rs=rs) -> str:
            value = median([1e6 * get(r) / r.requests for r in rs if r.requests])
            return "–" if value != value else f"{value:.0f}"  # NaN: not split by thread

        rows.append([label, per_req(lambda r: r.server_cpu_s),
                     per_req(lambda r: r.thread_cpu_s.get("event loop (main thread)", float("nan"))),
                     per_req(lambda r: r.thread_cpu_s.get("busiest other thread", float("nan"))),
                     per_req(lambda r: r.thread_cpu_s.get("all other threads", float("nan"))),
                     per_req(lambda r: r.client_cpu_s)])
    return [f"**CPU per answered request at {conns} connections** (µs; from /proc, so other load on the machine "
            "does not inflate it much; split by thread for one-process servers only — ganserve's busiest other "
            "thread is one of the model's forward/encode workers, the naive server's one of its thread-pool "
            "threads)", "",
            markdown_table(["server", "server total", "event loop thread", "busiest other thread",
                            "all other threads", "load generator"], rows)]


def targets(args: argparse.Namespace, res: Results, limit: float) -> list[str]:
    def med(name: str, conns: int, attr: str) -> float:
        return median([getattr(r, attr) for r in res.runs.get((name, conns), [])])

    out = ["**Targets** (issue 6)", ""]
    rows = []
    if 64 in args.conns:
        g, n = med("ganserve", 64, "rps"), med("naive", 64, "rps")
        p50, p99 = med("ganserve", 64, "p50_ms"), med("ganserve", 64, "p99_ms")
        rows += [
            ["64 conns: ≥ 75% of the limit", f"{g:.0f} / {limit:.0f} = {100 * g / limit:.0f}%", _ok(g >= 0.75 * limit)],
            ["64 conns: ≥ 2.5× the baseline", f"{g:.0f} / {n:.0f} = {g / n:.2f}×", _ok(g >= 2.5 * n)],
            ["64 conns: p99 ≤ 3× p50", f"{p99:.1f} / {p50:.1f} ms = {p99 / p50:.1f}×", _ok(p99 <= 3 * p50)],
        ]
    if 1 in args.conns:
        g1, n1 = med("ganserve", 1, "p50_ms"), med("naive", 1, "p50_ms")
        rows.append(["1 conn: p50 no worse than the baseline", f"{g1:.2f} vs {n1:.2f} ms", _ok(g1 <= n1)])
    if 256 in args.conns:
        rs = res.runs.get(("ganserve", 256), [])
        other = sum(r.other_errors for r in rs)
        worst = max((r.max_ms for r in rs), default=float("nan"))
        p99 = med("ganserve", 256, "p99_ms")
        rows.append(["256 conns: no errors but deliberate 503s; bounded latency",
                     f"{other} other errors, {sum(r.rejected for r in rs)} 503s; p99 {p99:.0f} ms, max {worst:.0f} ms",
                     _ok(other == 0 and worst < 30_000)])
    out.append(markdown_table(["target", "measured", "met"], rows))
    return out


def _ok(flag: bool) -> str:
    return "yes" if flag else "**no**"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="checkpoint folder (copied first)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load point")
    p.add_argument("--reps", type=int, default=3, help="repetitions (interleaved) for medians and spread")
    p.add_argument("--conns", default="1,8,64,256", help="comma-separated connection counts")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                   help="also profile ganserve's event loop with pyinstrument (default: yes, except with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 s per point, 1 repetition, prints only")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the peers (LitServe, naive) at 1 and 64 connections (default: yes)")
    p.add_argument("--peers-only", action="store_true", help="run the peers part alone (its own section)")
    p.add_argument("--forward-ratio", action="store_true",
                   help="only /generate at --conns against the raw forward pass of the same generator, interleaved "
                        "(its own section, serving-<checkpoint name>)")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                   help="write the tables into docs/performance.md (default: yes, except with --quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.reps = 1.0, 1
    args.conns = [int(c) for c in args.conns.split(",")]
    if args.profile is None:
        args.profile = not args.quick
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    args.header = machine_lines(device)  # before the run: is anything else using the CPU?
    args.peers = args.peers or args.peers_only
    # Stopped from outside (timeout, kill): unwind, so that the servers started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.device_used = device
    if args.forward_ratio and args.peers_only:
        p.error("--forward-ratio and --peers-only are two separate runs: choose one")
    res = run(args)
    if res.ratio is not None:
        publish(f"serving-{Path(args.checkpoint).resolve().name}", ratio_report(args, res.ratio), args.write,
                args.quick)
        return 0
    if not args.peers_only:
        publish("serving", report(args, res, device), args.write, args.quick)
    if res.peers is not None:
        publish("peers", peers_report(args, res.peers), args.write, args.quick)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
