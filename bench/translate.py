"""``POST /models/{model}/translate``: ganserve against a naive per-request server, same checkpoint, same run.

Both servers get the same requests: real edge maps (or whatever the translator's input transform
makes, ``training/pairs.py``) of held-out test images of the checkpoint's dataset, PNG-encoded at
its input size, 64 different ones posted in turn, by ``wrk`` (else the asyncio client of
``bench/loadgen.py``) at 1 and 16 connections, one server at a time, repetitions interleaved.
ganserve runs as ``python -m app`` with its defaults (uploads decoded off the event loop, concurrent
requests of one model batched into one forward pass); the naive server (``bench/naive_server.py``)
decodes, resizes, runs one forward pass and encodes per request in FastAPI's thread pool. Before
the load, both answer the same inputs, and the answers are compared.

Target (issue 31): ganserve ≥ 2.5× the naive server's requests/s at 16 connections.

    python bench/translate.py                               # every shipped translator (pix2pix)
    python bench/translate.py --checkpoint checkpoints/fashion-edges2fashion --duration 8 --reps 3
    python bench/translate.py --quick                       # smoke: short points, print only
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, before bench/ (bench/training.py)

import numpy as np
import torch
from PIL import Image

from bench.common import (
    ROOT,
    command_line,
    load_average,
    machine_lines,
    markdown_table,
    median,
    publish,
    spread,
)
from bench.loadgen import LoadResult, have_wrk
from bench.serving import Server, default_processes, prepare_checkpoint
from training.checkpoint import CheckpointConfig, load_generator, save_checkpoint
from training.data import load_dataset
from training.pairs import make_inputs

CONNS = (1, 16)
TARGET = 2.5  # ganserve's req/s over the naive server's at 16 connections
INPUTS = 64


def shipped_translators(root: Path = ROOT / "checkpoints") -> list[Path]:
    return [c.parent for c in sorted(root.glob("*/config.json")) if json.loads(c.read_text()).get("input")]


def stand_in(dest_root: Path) -> Path:
    """A random-init translator (edges → 32×32 grey, U-Net width 32) when no translator is shipped."""
    from training.models import build_generator

    kwargs = {"in_channels": 1, "channels": 1, "resolution": 32, "ngf": 32}
    torch.manual_seed(0)
    gen = build_generator("UNetGenerator", kwargs).eval()
    save_checkpoint(dest_root / "bench-edges2fashion", gen, {
        "name": "bench-edges2fashion", "family": "pix2pix", "description": "random-init translator",
        "generator": {"class": "UNetGenerator", "kwargs": kwargs}, "z_dim": 0, "num_classes": 0, "class_names": [],
        "image": {"channels": 1, "height": 32, "width": 32},
        "input": {"channels": 1, "height": 32, "width": 32, "transform": "edges"}, "sampleable": False,
        "dataset": {"name": "fashion-mnist", "num_images": 0, "class_names": []},
        "training": {"command": "bench", "epochs": 0, "seconds": 0.0, "seed": 0, "git_commit": None},
        "metrics": {}})
    return dest_root / "bench-edges2fashion"


def write_inputs(cfg: CheckpointConfig, folder: Path, count: int = INPUTS) -> list[Path]:
    """``count`` inputs of the translator made from held-out test images, as PNG files at its input size."""
    spec = cfg.input
    assert spec is not None
    data = load_dataset(cfg.dataset.name, "test", resolution=spec.height, channels=cfg.image.channels)
    pick = np.random.RandomState(0).choice(len(data.labels), min(count, len(data.labels)), replace=False)
    inputs = make_inputs(data.images[torch.from_numpy(pick)], spec.transform)  # (N, 1, H, W) uint8
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, x in enumerate(inputs):
        path = folder / f"input-{i:03d}.png"
        Image.fromarray(x[0].numpy()).save(path, "PNG")
        paths.append(path)
    return paths


def post(base: str, path: str, body: bytes, attempts: int = 100) -> bytes:
    """The answer to one upload. A 503 is tried again: with several processes, ``/readyz`` may answer from
    one that is ready while another is still loading its models."""
    req = urllib.request.Request(base + path, data=body, headers={"Content-Type": "image/png"}, method="POST")
    for _ in range(attempts - 1):
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return bytes(r.read())
        except urllib.error.HTTPError as e:
            if e.code != 503:
                raise
            time.sleep(0.2)
    with urllib.request.urlopen(req, timeout=60) as r:
        return bytes(r.read())


def prime(server: Server, path: str, pngs: list[Path]) -> None:
    """Ready, and answering: a few uploads, each tried again while a process is still loading."""
    server.wait_ready()
    for p in pngs[:16]:
        post(server.base, path, p.read_bytes())


def agreement(servers: dict[str, Server], path: str, pngs: list[Path]) -> int:
    """The largest difference, in grey levels, between the two servers' answers to the same inputs."""
    worst = 0
    for p in pngs[:8]:
        answers = [np.asarray(Image.open(io.BytesIO(post(s.base, path, p.read_bytes()))), np.int16)
                   for s in servers.values()]
        worst = max(worst, int(np.abs(answers[0] - answers[1]).max()))
    return worst


def run_checkpoint(args: argparse.Namespace, src: Path | None, tmp: Path) -> dict[str, object]:
    folder = tmp / "checkpoints"
    folder.mkdir()
    if src is None:
        ckpt, source = stand_in(folder), "a random-init stand-in (no translator is shipped)"
    else:
        ckpt, source = prepare_checkpoint(src, folder)
    _, cfg = load_generator(ckpt)
    pngs = write_inputs(cfg, tmp / "inputs")
    path = f"/models/{ckpt.name}/translate"
    env = {"GANSERVE_CHECKPOINTS": str(folder), "GANSERVE_DEFAULT_MODEL": ckpt.name, "GANSERVE_DEVICE": "cpu",
           "GANSERVE_LOG_LEVEL": "WARNING", "GANSERVE_RELOAD_INTERVAL_S": "0"}
    servers = {"ganserve": Server("ganserve", "app.main:app", env, "/readyz", processes=0),
               "naive": Server("naive", "bench.naive_server:app", {"NAIVE_CHECKPOINT": str(ckpt)}, "/healthz")}
    for s in servers.values():
        s.start(tmp)
    try:
        for s in servers.values():
            prime(s, path, pngs)
        worst = agreement(servers, path, pngs)
    finally:
        for s in servers.values():
            s.stop()
    runs: dict[tuple[str, int], list[LoadResult]] = {}
    warm = 1.0 if args.quick else 3.0
    for rep in range(args.reps):
        for name, server in servers.items():
            server.start(tmp)
            try:
                prime(server, path, pngs)
                server.load(args.tool, path, 0, 8, warm, pngs=pngs)
                for c in CONNS:
                    r = server.load(args.tool, path, 0, c, args.duration, pngs=pngs)
                    runs.setdefault((name, c), []).append(r)
                    print(f"  {cfg.name} rep {rep + 1} {name:9s} c={c:3d}: {r.rps:7.0f} req/s  p50 {r.p50_ms:7.1f} ms  "
                          f"p99 {r.p99_ms:7.1f} ms  {r.cpu_us:6.0f} µs CPU/req  statuses {r.statuses}", flush=True)
            finally:
                server.stop()
    spec = cfg.input
    assert spec is not None
    return {"name": cfg.name, "source": source, "runs": runs, "worst": worst, "processes": default_processes(env),
            "what": f"{spec.transform} {spec.width}×{spec.height} → {cfg.image.width}×{cfg.image.height}"
                    f"×{cfg.image.channels}, U-Net width {cfg.generator.kwargs.get('ngf', '?')}",
            "inputs": len(pngs), "bytes": int(median([p.stat().st_size for p in pngs]))}


def report(args: argparse.Namespace, header: list[str], results: list[dict[str, object]]) -> tuple[str, bool]:
    tool = ("`wrk -t1` with `bench/generate.lua` (png)" if args.tool == "wrk"
            else "the asyncio client of `bench/loadgen.py`")
    lines = [
        f"Command: `{command_line()}` — load generator: {tool}; {args.duration:g} s per point, {args.reps} "
        "repetition(s), one server at a time, repetitions interleaved; values are medians (min–max over "
        "repetitions). ganserve: `python -m app` (its defaults); naive: `uvicorn bench.naive_server:app` (one "
        "forward pass per request in FastAPI's thread pool, torch's default threads).",
        "", *header, f"- load average after the run: {load_average()}", ""]
    met_all = True
    for res in results:
        runs: dict[tuple[str, int], list[LoadResult]] = res["runs"]  # type: ignore[assignment]
        rows = []
        for c in CONNS:
            for name in ("ganserve", "naive"):
                rs = runs[(name, c)]
                rows.append([str(c), name, spread([r.rps for r in rs]), spread([r.p50_ms for r in rs], "{:.1f}"),
                             spread([r.p99_ms for r in rs], "{:.1f}"), f"{median([r.cpu_us for r in rs]):.0f}",
                             str(sum(r.other_errors + r.rejected for r in rs))])

        def med(name: str, c: int, runs: dict[tuple[str, int], list[LoadResult]] = runs) -> float:
            return median([r.rps for r in runs[(name, c)]])

        ratio16, ratio1 = med("ganserve", 16) / med("naive", 16), med("ganserve", 1) / med("naive", 1)
        met = ratio16 >= TARGET
        met_all = met_all and met
        lines += [
            f"**{res['name']}** ({res['what']}; {res['source']}): {res['inputs']} inputs, PNGs of "
            f"{res['bytes']} bytes (median); ganserve in {res['processes']} process(es). The two servers' answers "
            f"to the same 8 inputs differ by at most {res['worst']} grey level(s).",
            "",
            markdown_table(["conns", "server", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "errors and 503s"],
                           rows),
            "",
            markdown_table(["target", "measured", "met"], [
                [f"16 conns: ganserve ≥ {TARGET:g}× the naive server's req/s",
                 f"{med('ganserve', 16):.0f} / {med('naive', 16):.0f} = {ratio16:.2f}×", "yes" if met else "**no**"],
                ["1 conn (no target)", f"{med('ganserve', 1):.0f} / {med('naive', 1):.0f} = {ratio1:.2f}×", "–"],
            ]),
            ""]
    return "\n".join(lines), met_all


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, action="append", default=None,
                   help="a translator checkpoint folder (repeatable); default: every shipped translator")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per load point")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--quick", action="store_true", help="2 s per point, one repetition; print, do not write")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.reps = 2.0, 1
    args.tool = args.loadgen if args.loadgen != "auto" else ("wrk" if have_wrk() else "python")
    sources: list[Path | None] = list(args.checkpoint or shipped_translators()) or [None]
    header = machine_lines()
    results = []
    for src in sources:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run_checkpoint(args, src, Path(tmp)))
    text, met = report(args, header, results)
    publish("translate", text, args.write, args.quick)
    return 0 if met or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
