"""Readiness of all the processes of one pod (``python -m app --processes N``), not only the one asked.

With several processes behind one socket, ``/readyz`` is answered by whichever process the kernel
hands the connection to; a probe must not pass while another process is still loading checkpoints
(the requests it gets would be 503s). So ``python -m app`` makes a shared folder and tells its
processes the count and the folder (``GANSERVE_POD_PROCESSES``, ``GANSERVE_POD_READY_DIR``: internal,
set by the launcher only). Each process keeps a mark there — a file named by its pid, holding its
start time, written atomically — while its registry is ready; ``/readyz`` is ready only when at
least N living processes have marked. A dead process's mark does not count (uvicorn restarts a
worker that dies; the new one marks once it has loaded), nor does a mark whose pid now belongs to
another process (the start time differs). Without the two variables (one process) nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

PROCESSES_ENV = "GANSERVE_POD_PROCESSES"
FOLDER_ENV = "GANSERVE_POD_READY_DIR"
MARK_INTERVAL_S = 0.25  # how soon a change of this process's readiness shows in the folder

log = logging.getLogger("app.podready")


def start_time(pid: int) -> str | None:
    """An identity of the living process ``pid``: its start time (clock ticks since boot, from
    ``/proc``), or "" where there is no ``/proc``; None when it is gone (or a zombie, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:  # no /proc (not Linux): alive is all that can be told
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (name)": state is field 3, starttime field 22
    return None if fields[0] in "ZX" else fields[19]


class PodReadiness:
    """This process's mark in the shared folder, and the count of ready processes of the pod."""

    def __init__(self, folder: Path, processes: int) -> None:
        self.folder = folder
        self.processes = processes
        self.pid = os.getpid()
        self.marked = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PodReadiness | None:
        """The pod of ``python -m app --processes N`` (N > 1), else None (one process: its own readiness)."""
        env = os.environ if environ is None else environ
        folder, count = env.get(FOLDER_ENV), env.get(PROCESSES_ENV, "")
        if not folder or not count.isdigit() or int(count) < 2:
            return None
        return cls(Path(folder), int(count))

    def mark(self, ready: bool) -> None:
        """Mark this process ready (or withdraw the mark). The mark appears whole: written to a
        temporary file, then renamed."""
        if ready == self.marked:
            return
        path = self.folder / str(self.pid)
        if ready:
            tmp = self.folder / f".{self.pid}.tmp"
            tmp.write_text(start_time(self.pid) or "")
            os.replace(tmp, path)
        else:
            path.unlink(missing_ok=True)
        self.marked = ready

    def ready_count(self) -> int:
        """How many living processes have marked ready."""
        count = 0
        try:
            paths = list(self.folder.iterdir())
        except FileNotFoundError:  # the launcher is gone: so is the pod
            return 0
        for path in paths:
            if not path.name.isdigit():
                continue
            with contextlib.suppress(FileNotFoundError):  # withdrawn meanwhile
                if path.read_text() == start_time(int(path.name)):
                    count += 1
        return count

    def all_ready(self) -> bool:
        return self.ready_count() >= self.processes

    async def keep_marked(self, is_ready: Callable[[], bool]) -> None:
        """Keep the mark in step with ``is_ready()`` until cancelled; withdraw it then."""
        failing = False
        try:
            while True:
                try:
                    self.mark(is_ready())
                    failing = False
                except OSError as e:  # the folder gone or full: this process is not counted ready
                    if not failing:
                        log.warning("cannot mark this process ready in %s: %s", self.folder, e)
                    failing = True
                await asyncio.sleep(MARK_INTERVAL_S)
        finally:
            with contextlib.suppress(OSError):
                self.mark(False)
