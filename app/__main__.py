"""``python -m app [--host H] [--port P] [--processes N|auto]``: serve with uvicorn, in one or more processes.

One process is ``uvicorn app.main:app``. With ``--processes N`` uvicorn runs N copies of the
service behind one socket (the kernel spreads the connections); each copy loads the checkpoints
and has its own event loop, batcher and image cache, so the Python work of HTTP handling runs
on N cores instead of behind one interpreter lock (docs/performance.md has the numbers), and
each plans its model workers for its share of the cores (``GANSERVE_CORES``). The default,
``auto``, is one process per CPU core (at most 4) when the service runs on the CPU, and one
process when it runs on a GPU — there, run one process per GPU instead
(``GANSERVE_DEVICE=cuda:N``, one container each, as docker-compose.yml does). With several processes the
Prometheus metrics are kept in ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary folder unless
set) and ``/metrics`` adds up all the processes, and ``/readyz`` says ready only when every process
is: each marks itself ready in a shared temporary folder (``app.podready``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from app.podready import FOLDER_ENV, PROCESSES_ENV
from training.argtypes import int_range

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_AUTO_PROCESSES = 4
_process_count = int_range(1, 64)


def processes_arg(s: str) -> int | str:
    """``--processes``: ``auto`` or a count in [1, 64]."""
    return "auto" if s.strip().lower() == "auto" else _process_count(s)


def auto_processes() -> int:
    """One process per core (at most ``MAX_AUTO_PROCESSES``) on the CPU; 1 when the service's
    device (``GANSERVE_DEVICE``) resolves to an accelerator."""
    from app.settings import Settings, usable_cores
    from training.devices import resolve_device

    spec = Settings().device
    on_cpu = spec == "cpu" or (spec == "auto" and resolve_device("auto").type == "cpu")
    return max(1, min(MAX_AUTO_PROCESSES, usable_cores())) if on_cpu else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int_range(1, 65535), default=8000)
    p.add_argument("--processes", type=processes_arg, default="auto",
                   help=f"copies of the service behind the one socket: 1…64, or auto (one per usable CPU core, "
                        f"from the affinity and the cgroup CPU quota, at most "
                        f"{MAX_AUTO_PROCESSES}, on the CPU; 1 on a GPU)")
    p.add_argument("--access-log", action="store_true", help="log every request (off: faster)")
    return p


def prepare_metrics_dir(processes: int) -> tuple[Path | None, bool]:
    """With several processes: an empty folder for the shared Prometheus metrics, exported in the
    environment the processes inherit (set before any of them imports prometheus_client)
    → (folder, whether we made it and remove it at exit)."""
    if processes == 1:
        return None, False
    given = os.environ.get(MULTIPROC_ENV)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="ganserve-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # counts of an earlier run would be added to this one's
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder, not given


def prepare_ready_dir(processes: int) -> Path | None:
    """With several processes: a fresh folder where each marks itself ready, and the count, exported
    to the processes (``app.podready``) → the folder, removed at exit. One process: neither (its own
    readiness is the pod's)."""
    for name in (FOLDER_ENV, PROCESSES_ENV):
        os.environ.pop(name, None)
    if processes == 1:
        return None
    folder = Path(tempfile.mkdtemp(prefix="ganserve-ready-"))
    os.environ[FOLDER_ENV], os.environ[PROCESSES_ENV] = str(folder), str(processes)
    return folder


def share_cores(processes: int) -> None:
    """Each of N processes plans its model workers for 1/N of the cores it may run on
    (``GANSERVE_CORES``, unless set): on 2 cores, 2 processes of 1 single-threaded worker each —
    rather than 2 each, which would put 4 forward passes on 2 cores and answer fewer requests a
    second (docs/history.md)."""
    if processes > 1 and "GANSERVE_CORES" not in os.environ:
        from app.settings import usable_cores

        os.environ["GANSERVE_CORES"] = str(max(1, usable_cores() // processes))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn

    try:
        processes = auto_processes() if args.processes == "auto" else int(args.processes)
    except ValidationError as e:  # a bad GANSERVE_* variable: the service would refuse to start anyway
        problems = "; ".join(f"GANSERVE_{'_'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in e.errors())
        build_parser().error(f"invalid setting in the environment: {problems}")
    folder, ours = prepare_metrics_dir(processes)
    ready_dir = prepare_ready_dir(processes)
    share_cores(processes)
    try:
        uvicorn.run("app.main:app", host=args.host, port=args.port, workers=processes,
                    access_log=args.access_log)
    finally:
        if folder is not None and ours:
            shutil.rmtree(folder, ignore_errors=True)
        if ready_dir is not None:
            shutil.rmtree(ready_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
