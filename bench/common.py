"""What the benchmarks share: the machine description, medians and spreads, a training step on
random data, and writing a generated table into docs/performance.md between markers (so re-running
regenerates it)."""

from __future__ import annotations

import os
import platform
import re
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def proc_cpu_seconds(stat: Path) -> float:
    """User + system CPU seconds so far of the process or thread whose ``/proc/…/stat`` this is (Linux).
    Raises OSError when it has gone."""
    fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds() -> dict[int, float]:
    """pid → CPU seconds so far, of every process."""
    out: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            out[int(stat.parent.name)] = proc_cpu_seconds(stat)
        except (OSError, IndexError, ValueError):
            continue
    return out


def busy_processes(interval: float = 1.0) -> list[str]:
    """Other processes using the CPU now (e.g. a training run), measured over ``interval`` seconds:
    they contaminate the numbers. (``ps``'s %CPU is the average over a process's whole life, so it
    would also name a training that is paused or idle now.)"""
    before = _cpu_seconds()
    time.sleep(interval)
    after = _cpu_seconds()
    me = {os.getpid(), os.getppid()}
    shares = {pid: (t - before[pid]) / interval for pid, t in after.items() if pid in before and pid not in me}
    busy = []
    for pid, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        if share < 0.2:
            break
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        busy.append(f"pid {pid} at {100 * share:.0f}% CPU: {cmd[:110]}")
    return busy


def machine_lines(device: str = "cpu") -> list[str]:
    import torch

    lines = [
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; device: {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else ""),
        f"- Python {platform.python_version()}, torch {torch.__version__} "
        f"(default threads {torch.get_num_threads()}), {platform.system()} {platform.release()}",
        f"- load average before the run (1, 5, 15 min): {load_average()}",
    ]
    busy = busy_processes()
    if busy:
        lines.append("- **contention: other processes were using the CPU at the start of this run** "
                     "(the numbers are lower than on an idle machine):")
        lines += [f"  - {b}" for b in busy]
    else:
        lines.append("- no other process was using the CPU at the start")
    return lines


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def spread(xs: Sequence[float], fmt: str = "{:.0f}") -> str:
    """``median (min–max)`` of repetitions; just the value when there is one."""
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def write_section(name: str, text: str, doc: Path = DOC) -> None:
    """Replace what lies between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->`` in ``doc``."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    body = doc.read_text() if doc.exists() else ""
    block = f"{start}\n{text.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(body):
        body = pattern.sub(lambda _: block, body)
    else:
        body = body.rstrip() + ("\n\n" if body else "") + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(body)
    tmp.replace(doc)


def publish(name: str, text: str, write: bool | None, quick: bool) -> None:
    """Print a benchmark's report; write it into its docs/performance.md section too, unless told not to
    (``write`` None: write a full run, not a ``--quick`` one)."""
    print(text)
    if write if write is not None else not quick:
        write_section(name, text)
        print("\nwritten to docs/performance.md", flush=True)


def random_trainer(family: str, batch: int, resolution: int = 28, channels: int = 1, num_classes: int = 10,
                   **options: Any) -> tuple[Any, Any, Any]:
    """(trainer, images, labels): a real ``training.loop.Trainer`` of ``family`` on random images
    (28×28 grey with 10 classes unless told otherwise; 4 batches of them), and one batch with its labels —
    the training images' clusters for a self-conditioned GAN — to time ``trainer.step`` on."""
    import torch

    from training.data import ImageData, to_float
    from training.distributed import Dist
    from training.loop import Trainer
    from training.models import get_family
    from training.options import TrainOptions

    g = torch.Generator().manual_seed(0)
    shape = (batch * 4, channels, resolution, resolution)
    data = ImageData("bench", torch.randint(0, 256, shape, dtype=torch.uint8, generator=g),
                     torch.randint(0, num_classes, (batch * 4,), generator=g), [str(i) for i in range(num_classes)])
    cfg = TrainOptions(family=family, dataset="synthetic", out="/nonexistent", batch_size=batch, device="cpu",
                       resolution=resolution, channels=channels, tensorboard=False, progress=False, **options)
    trainer = Trainer(cfg, get_family(family), data, Dist(), torch.device("cpu"))
    labels = trainer.objective.real_labels(data.labels)
    return trainer, to_float(data.images[:batch].clone()), labels[:batch].clone()


def step_rate(trainer: Any, x: Any, y: Any, warmup: int, seconds: float, min_steps: int,
              sync_every_step: bool = False) -> float:
    """Images/s of ``trainer.step(x, y)``: ``warmup`` untimed steps, then at least ``seconds`` and
    ``min_steps`` timed ones. The losses stay tensors (one sync at the end, as the training loop's next log
    line makes) unless ``sync_every_step`` reads them after every step, as a plain loop printing them does."""
    for _ in range(warmup):
        out = trainer.step(x, y)
    [float(t) for t in out.values()]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < min_steps:
        out = trainer.step(x, y)
        if sync_every_step:
            _ = {k: t.item() for k, t in out.items()}
        steps += 1
    [float(t) for t in out.values()]
    return steps * len(x) / (time.perf_counter() - start)


def free_port() -> int:
    """A free TCP port on loopback, for a server a benchmark or test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Pids of the processes below ``pid`` (uvicorn's or nginx's workers, the resource tracker)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found
