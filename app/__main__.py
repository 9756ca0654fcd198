"""``python -m app [--host H] [--port P] [--processes N]``: serve with uvicorn, in one or more processes.

One process (the default) is ``uvicorn app.main:app``. With ``--processes N`` uvicorn runs N
copies of the service behind one socket (the kernel spreads the connections); each copy loads
the checkpoints and has its own event loop, batcher and image cache, so the Python work of
HTTP handling runs on N cores instead of behind one interpreter lock. The Prometheus metrics
are then kept in ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary folder unless set) and
``/metrics`` adds up all the processes. On a GPU box run one process per GPU instead
(``GANSERVE_DEVICE=cuda:N``, one container each, as docker-compose.yml does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from training.argtypes import int_range

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int_range(1, 65535), default=8000)
    p.add_argument("--processes", type=int_range(1, 64), default=1,
                   help="copies of the service behind the one socket (e.g. the number of cores)")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn

    folder, ours = prepare_metrics_dir(args.processes)
    try:
        uvicorn.run("app.main:app", host=args.host, port=args.port, workers=args.processes,
                    access_log=args.access_log)
    finally:
        if folder is not None and ours:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
