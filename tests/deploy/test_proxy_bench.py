"""bench/proxy.py starts nginx and the service and prints its table on the short setting."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_proxy_bench_quick() -> None:
    if shutil.which("wrk") is None or not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        pytest.skip("wrk and nginx are needed (scripts/setup.sh test installs both)")
    out = subprocess.run([sys.executable, "bench/proxy.py", "--quick"], cwd=ROOT, capture_output=True, text=True,
                         timeout=280)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "docs/performance.md" not in text  # --quick prints only
    assert text.count("## Through the caching proxy") == 1
    for traffic in ("cache hit", "cache miss"):
        for path in ("direct", "through nginx"):
            row = next(line for line in text.splitlines() if line.startswith(f"| {traffic}") and f"| {path} |" in line)
            assert row.endswith("| yes |"), row  # every request answered 200
    hit_via_nginx = next(line for line in text.splitlines()
                         if line.startswith("| cache hit") and "| through nginx |" in line)
    assert "| 0.0 % |" in hit_via_nginx  # answered from nginx's cache: none reached the service
