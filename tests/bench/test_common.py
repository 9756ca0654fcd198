"""The benchmark's machine report names the processes that use the CPU now — not one that is paused."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from bench.common import busy_processes

SPIN = "import time\nwhile True: time.perf_counter()  # ganserve-busy-probe"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_busy_processes_names_a_spinning_process_but_not_a_stopped_one() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.3)
        assert any(f"pid {proc.pid} " in b and "ganserve-busy-probe" in b for b in busy_processes(0.5))
        # Stopped, it uses no CPU now — though over its life it averaged nearly a whole core (what `ps` shows).
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.1)
        assert not any(f"pid {proc.pid} " in b for b in busy_processes(0.5))
    finally:
        proc.kill()
        proc.wait()
