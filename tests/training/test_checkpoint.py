import json
import pickle
import tempfile
from pathlib import Path

import pytest
import torch

from training.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_generator,
    read_config,
    save_checkpoint,
    update_metrics,
)
from training.models.dcgan import DCGenerator
from training.models.mlp import MLPGenerator


def make_config(name: str, g_class: str, kwargs: dict, classes: list[str]) -> dict:
    return {
        "name": name, "family": "cgan" if classes else "dcgan",
        "generator": {"class": g_class, "kwargs": kwargs},
        "z_dim": kwargs["z_dim"], "num_classes": len(classes), "class_names": classes,
        "image": {"channels": kwargs["channels"], "height": kwargs["resolution"], "width": kwargs["resolution"]},
        "dataset": {"name": "synthetic", "num_images": 10, "class_names": classes or ["a"]},
        "training": {"command": "python -m training train …", "epochs": 1, "seconds": 1.0, "seed": 0},
    }


def tiny(tmp_path: Path, dtype: str = "float32", name: str = "tiny") -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    kwargs = {"z_dim": 8, "num_classes": 3, "channels": 1, "resolution": 28, "ngf": 8, "upsample": "convT",
              "bn": "before-act"}
    g = DCGenerator(**kwargs)
    # Make the BN statistics non-trivial so the round trip checks buffers too.
    g.train()
    g(torch.randn(16, 8), torch.randint(0, 3, (16,)))
    g.eval()
    out = tmp_path / name
    save_checkpoint(out, g, make_config(name, "DCGenerator", kwargs, ["a", "b", "c"]), b"png", dtype)
    return g, out


def test_round_trip_reproduces_outputs_exactly(tmp_path):
    g, path = tiny(tmp_path)
    loaded, cfg = load_generator(path)
    z, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        assert torch.equal(g(z, y), loaded(z, y))
    assert not loaded.training and cfg.conditional and cfg.class_names == ["a", "b", "c"]


def test_float16_round_trip_equals_the_rounded_weights(tmp_path):
    g, path = tiny(tmp_path, "float16")
    loaded, cfg = load_generator(path)
    assert cfg.weights_dtype == "float16"
    ref = DCGenerator(**cfg.generator.kwargs).eval()
    ref.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in g.state_dict().items()})
    z, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        assert torch.equal(ref(z, y), loaded(z, y))
    assert (path / "generator.safetensors").stat().st_size < 0.6 * (sum(
        v.numel() * 4 for v in g.state_dict().values()))


def test_unconditional_mlp_round_trip(tmp_path):
    kwargs = {"z_dim": 8, "num_classes": 0, "channels": 1, "resolution": 28, "hidden": [16, 32]}
    g = MLPGenerator(**kwargs).eval()
    save_checkpoint(tmp_path / "m", g, make_config("m", "MLPGenerator", kwargs, []))
    loaded, cfg = load_generator(tmp_path / "m")
    z = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(g(z, None), loaded(z, None))
    assert not cfg.conditional


def test_writes_leave_no_temp_files_and_are_readable(tmp_path):
    _, path = tiny(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "generator.safetensors", "samples.png"]
    assert (path / "config.json").stat().st_mode & 0o044  # readable by others (containers)


def test_truncated_weights_are_refused(tmp_path):
    _, path = tiny(tmp_path)
    w = path / "generator.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="sha256"):
        load_generator(path)


def test_bit_flip_is_refused(tmp_path):
    _, path = tiny(tmp_path)
    w = path / "generator.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x10
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_generator(path)


def test_garbage_with_matching_hash_is_not_safetensors(tmp_path):
    _, path = tiny(tmp_path)
    junk = b"\x00" * 64
    (path / "generator.safetensors").write_bytes(junk)
    cfg = json.loads((path / "config.json").read_text())
    import hashlib

    cfg["generator_sha256"] = hashlib.sha256(junk).hexdigest()
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_generator(path)


def test_config_that_does_not_match_the_weights(tmp_path):
    _, path = tiny(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["generator"]["kwargs"]["ngf"] = 16
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"do not match config\.json"):
        load_generator(path)


def test_swapped_weights_are_refused(tmp_path):
    _, a = tiny(tmp_path, name="a")
    torch.manual_seed(1)
    kwargs = {"z_dim": 8, "num_classes": 3, "channels": 1, "resolution": 28, "ngf": 8}
    save_checkpoint(tmp_path / "b", DCGenerator(**kwargs), make_config("b", "DCGenerator", kwargs, ["a", "b", "c"]))
    (a / "generator.safetensors").write_bytes((tmp_path / "b" / "generator.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="sha256"):
        load_generator(a)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(num_classes=5), "class_names"),
        (lambda c: c.update(name="../evil"), "name"),
        (lambda c: c.update(unknown_key=1), "unknown_key"),
        (lambda c: c.update(format_version=99), "format_version"),
        (lambda c: c["generator"]["kwargs"].update(z_dim=9), "z_dim"),
        (lambda c: c.update(class_names=["a", "a", "b"]), "unique"),
        (lambda c: c.update(generator_sha256="xyz"), "generator_sha256"),
        (lambda c: c.update(truncation=0), "truncation"),
        (lambda c: c.update(truncation=1.5), "truncation"),
    ],
)
def test_invalid_config_is_refused_with_the_field(tmp_path, edit, message):
    _, path = tiny(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=message):
        load_generator(path)


def test_not_json_and_missing_files(tmp_path):
    _, path = tiny(tmp_path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_config(path)
    with pytest.raises(CheckpointError, match="missing"):
        load_generator(tmp_path / "nothing-here")
    _, path2 = tiny(tmp_path, name="b")
    (path2 / "generator.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_generator(path2)


class _Exploit:
    """Unpickling this writes a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_pickles_are_never_loaded(tmp_path):
    _, path = tiny(tmp_path)
    marker = tmp_path / "pwned.txt"
    payload = pickle.dumps(_Exploit(marker))
    for name in ("generator.pt", "generator.pkl", "model.bin"):
        (path / name).write_bytes(payload)
    load_generator(path)  # loads the safetensors, ignores the rest
    (path / "generator.safetensors").write_bytes(payload)  # a pickle under the safetensors name
    with pytest.raises(CheckpointError):
        load_generator(path)
    assert not marker.exists()


def test_update_metrics_keeps_weights_valid(tmp_path):
    _, path = tiny(tmp_path)
    before = (path / "generator.safetensors").read_bytes()
    cfg = update_metrics(path, {"fid": 1.5}, "ab" * 32)
    assert cfg.metrics["fid"] == 1.5 and read_config(path).evaluator_sha256 == "ab" * 32
    assert (path / "generator.safetensors").read_bytes() == before
    load_generator(path)


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_the_same_weights_always_give_the_same_bytes() -> None:
    """safetensors writes its metadata map in a random order (safetensors#584); weights_bytes puts it in
    sorted order, so a checkpoint's sha256 names its weights, not the luck of one save."""
    from safetensors import safe_open

    from training.checkpoint import canonical_metadata_order, weights_bytes

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    meta = {"b": "2", "a": "1", "c": "3", "ganserve_format_version": "1"}
    saves = {weights_bytes(net, "float16", meta) for _ in range(12)}
    assert len(saves) == 1
    data = saves.pop()
    header = data[8 : 8 + int.from_bytes(data[:8], "little")].decode()
    assert header.index('"a"') < header.index('"b"') < header.index('"c"') < header.index('"format"')
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "w.safetensors"
        path.write_bytes(data)
        with safe_open(str(path), framework="pt") as f:
            assert f.metadata() == {**meta, "format": "pt"}
            assert torch.equal(f.get_tensor("0.weight"), net[0].weight.detach().half())
    assert canonical_metadata_order(data) == data  # already canonical: unchanged
