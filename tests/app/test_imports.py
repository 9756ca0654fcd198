"""The service imports from training/ only what serving needs (DESIGN.md): the checkpoint reader,
the networks, the seed rule, the projection algorithm, image helpers, and the small shared rules for
labels, translators' input transforms (names only), quality bars, devices and argument types — never
the training loop, datasets, losses or evaluation code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.app.conftest import write_cgan

ALLOWED = {"training", "training.checkpoint", "training.latent", "training.images", "training.labels",
           "training.projection", "training.bars", "training.devices", "training.argtypes"}


def test_serving_imports_only_what_it_needs(tmp_path: Path) -> None:
    write_cgan(tmp_path)
    code = (
        "import json, sys\n"
        "from fastapi.testclient import TestClient\n"
        "import app.__main__\n"
        "from app.main import create_app\n"
        "from tests.app.conftest import make_settings, wait_ready\n"
        f"with TestClient(create_app(make_settings({str(tmp_path)!r}))) as c:\n"
        "    wait_ready(c)\n"
        "    assert c.get('/generate?seed=1&label=0').status_code == 200\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'scipy', 'sklearn',"
        " 'tensorboard', 'mlxtend', 'torchvision'))))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    networks = {m for m in loaded if m.startswith("training.models")}
    assert loaded - networks <= ALLOWED, sorted(loaded - networks - ALLOWED)
