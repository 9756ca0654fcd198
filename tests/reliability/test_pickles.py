"""Nothing ever unpickles: malicious pickles planted where the service and the trainer look.

The planted payload creates a marker directory when unpickled. It is put in the checkpoints
folder (as a loose file, as ``generator.pt`` beside a valid config, and disguised as
``generator.safetensors`` with a matching sha256) and as the resume state of a training run.
Neither the service nor ``--resume`` may run it. A source scan keeps every future
``torch.load`` on ``weights_only=True`` and every other unpickling call out of the code.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.conftest import COND, make_settings, wait_for, wait_ready, write_cgan
from training.checkpoint import CONFIG, WEIGHTS, CheckpointError, load_generator, sha256_bytes

ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (self.marker,)


def evil_bytes(marker: Path, wrap_in_torch: bool) -> bytes:
    if wrap_in_torch:  # a torch.save zip archive whose data.pkl holds the payload
        path = marker.parent / f"{marker.name}.pt"
        torch.save({"state": Payload(marker)}, path)
        data = path.read_bytes()
        path.unlink()
        return data
    return pickle.dumps(Payload(marker))


def test_the_payload_works(tmp_path: Path) -> None:
    """The planted files are real exploits: loaded the unsafe way, they do run."""
    marker = tmp_path / "ran"
    pickle.loads(evil_bytes(marker, wrap_in_torch=False))
    assert marker.is_dir()
    marker.rmdir()
    # The torch-format file is a zip whose data.pkl is the same exploit: unpickled, it runs.
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(evil_bytes(marker, wrap_in_torch=True))) as z:
        inner = next(n for n in z.namelist() if n.endswith("data.pkl"))
        pickle.loads(z.read(inner))
    assert marker.is_dir()


def test_service_never_unpickles(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root, marker = tmp_path / "checkpoints", tmp_path / "pwned"
    write_cgan(root)
    (root / "evil.pt").write_bytes(evil_bytes(marker, True))
    (root / "evil.pkl").write_bytes(evil_bytes(marker, False))
    # A folder with a valid config.json but only a pickle for weights.
    (root / "pickled").mkdir()
    cfg = json.loads((root / COND / CONFIG).read_text())
    (root / "pickled" / CONFIG).write_text(json.dumps({**cfg, "name": "pickled"}))
    (root / "pickled" / "generator.pt").write_bytes(evil_bytes(marker, True))
    # A pickle disguised as the safetensors file, its sha256 recorded in config.json.
    disguised = evil_bytes(marker, True)
    shutil.copytree(root / COND, root / "disguised")
    (root / "disguised" / WEIGHTS).write_bytes(disguised)
    (root / "disguised" / CONFIG).write_text(json.dumps({**cfg, "name": "disguised",
                                                        "generator_sha256": sha256_bytes(disguised)}))
    # A valid checkpoint with a pickle beside it: served from the safetensors, the pickle ignored.
    write_cgan(root, "with-pickle")
    (root / "with-pickle" / "generator.pt").write_bytes(evil_bytes(marker, True))

    caplog.set_level("WARNING", logger="app.registry")
    with TestClient(create_app(make_settings(root, reload_interval_s=0.05))) as client:
        wait_ready(client)
        body = client.get("/models").json()
        assert sorted(m["name"] for m in body["models"]) == [COND, "with-pickle"]
        refused = {r["name"]: r["reason"] for r in body["refused"]}
        assert "pickles are never loaded" in refused["evil.pt"] and "evil.pkl" in refused
        assert "never pickles" in refused["pickled"]
        assert "not a valid safetensors file" in refused["disguised"]
        # Dropped in while serving (hot reload): same.
        (root / "late.pth").write_bytes(evil_bytes(marker, True))
        wait_for(lambda: "late.pth" in {r["name"] for r in client.get("/models").json()["refused"]})
    assert any("ignoring pickle file(s) generator.pt" in r.getMessage() for r in caplog.records)
    for folder in ("pickled", "disguised"):
        with pytest.raises(CheckpointError):
            load_generator(root / folder)
    assert not marker.exists(), "a planted pickle was executed"


def test_resume_never_unpickles(tmp_path: Path) -> None:
    marker, run, out = tmp_path / "pwned", tmp_path / "run", tmp_path / "ck"
    run.mkdir()
    (run / "state.pt").write_bytes(evil_bytes(marker, True))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "training", "train", "--family", "dcgan", "--dataset", "synthetic", "--epochs", "1",
         "--width", "8", "--z-dim", "8", "--batch-size", "16", "--synthetic-size", "32", "--no-progress",
         "--no-tensorboard", "--out", str(out), "--run-dir", str(run), "--resume"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert not marker.exists(), "the planted resume state was executed"
    assert done.returncode != 0  # refused, not trained over
    assert "weights_only" in done.stderr or "Unsupported global" in done.stderr, done.stderr[-2000:]
    assert not out.exists()


UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("dill", "load"),
              ("dill", "loads"), ("joblib", "load"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
              ("marshal", "load"), ("marshal", "loads"), ("shelve", "open"), ("jit", "load")}


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def test_no_code_path_can_unpickle() -> None:
    """Every ``torch.load`` in app/, training/, bench/ and scripts/ says ``weights_only=True``;
    nothing calls pickle, dill, joblib, marshal, shelve or ``torch.jit.load``, and no ``np.load``
    allows pickles."""
    problems: list[str] = []
    files = [p for d in ("app", "training", "bench", "scripts") for p in (ROOT / d).rglob("*.py")]
    assert files
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom)
                                                        and node.module else [])
                if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal")
                       for n in names):
                    problems.append(f"{where}:{node.lineno}: imports an unpickler")
        for call in _calls(tree):
            f = call.func
            if not isinstance(f, ast.Attribute):
                continue
            owner = f.value.attr if isinstance(f.value, ast.Attribute) else getattr(f.value, "id", "")
            kw = {k.arg: k.value for k in call.keywords}
            if owner == "torch" and f.attr == "load":
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    problems.append(f"{where}:{call.lineno}: torch.load without weights_only=True")
            elif (owner, f.attr) in UNPICKLERS:
                problems.append(f"{where}:{call.lineno}: {owner}.{f.attr}")
            elif owner in ("np", "numpy") and f.attr == "load":
                allow = kw.get("allow_pickle")
                if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                    problems.append(f"{where}:{call.lineno}: np.load with allow_pickle")
    assert not problems, problems
