"""The checkpoint contract: ``config.json`` + ``generator.safetensors`` + ``samples.png``, and for the
autoencoders and the VAE ``encoder.safetensors``.

``load_generator`` (and ``load_encoder``) is the one reader (service, ``python -m training sample``, scripts).
It reads safetensors only, checks the sha256 recorded in config.json against the very
bytes it parses, validates config.json, and rebuilds the generator from the config
alone. Every write is atomic: a temp file in the same folder, fsync, then rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from training.models import build_encoder, build_generator
from training.models.encoders import LatentEncoder

FORMAT_VERSION: Literal[1] = 1
CONFIG = "config.json"
WEIGHTS = "generator.safetensors"
ENCODER = "encoder.safetensors"
SAMPLES = "samples.png"
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_CONFIG_BYTES = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says which file and why."""


class StrictModel(BaseModel):
    """A frozen pydantic model that refuses unknown keys: the base of every config file's schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GeneratorSpec(StrictModel):
    class_name: str = Field(alias="class")
    kwargs: dict[str, Any]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EncoderSpec(StrictModel):
    """The encoder of an autoencoder or VAE (``encoder.safetensors``): how to rebuild it, what it outputs
    (the code itself, or a VAE's mean and log-variance concatenated) and the sha256 of its weights."""

    class_name: str = Field(alias="class")
    kwargs: dict[str, Any]
    output: Literal["code", "mean-logvar"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ImageSpec(StrictModel):
    channels: Literal[1, 3]
    height: int = Field(ge=1, le=1024)
    width: int = Field(ge=1, le=1024)


# The named transforms that make a translator's input from an image (their code: training/pairs.py, which
# the service does not import).
Transform = Literal["edges", "grey"]


class TranslatorInput(StrictModel):
    """What a translator takes: ``generator(x)`` with x (B, channels, height, width) in [-1, 1], made from
    an image by ``transform`` (``training/pairs.py``; e.g. ``edges``: black lines on white)."""

    channels: Literal[1, 3]
    height: int = Field(ge=1, le=1024)
    width: int = Field(ge=1, le=1024)
    transform: Transform


class DatasetInfo(StrictModel):
    name: str
    num_images: int = Field(ge=0)
    class_names: list[str]


class GeneratorSource(StrictModel):
    """``train --init-g-from``: the checkpoint a fine-tuned G started from, as it was then."""

    folder: str
    name: str
    generator_sha256: str
    command: str
    epochs: int = Field(ge=0)
    seconds: float = Field(ge=0)


class CommandPart(StrictModel):
    """One command line of a run that was stopped and resumed: it trained from ``from_epoch`` on (``None``:
    the run's resume state predates this record, so where this command took over is not known)."""

    command: str
    from_epoch: int | None = Field(ge=0)


class TrainingInfo(StrictModel):
    command: str
    epochs: int = Field(ge=0)
    seconds: float = Field(ge=0)
    seed: int
    git_commit: str | None = None
    images_seen: int = Field(ge=0, default=0)
    world_size: int = Field(ge=1, default=1)
    options: dict[str, Any] = {}
    # --eval-every: one entry per evaluation during training (epoch, seconds, key metrics, bars)
    evaluations: list[dict[str, Any]] = []
    init_g_from: GeneratorSource | None = None  # a fine-tune: its seconds and epochs are this run's own
    # Every command line that trained these weights, in order (the last is ``command``); empty in
    # checkpoints written before it was recorded.
    parts: list[CommandPart] = []


class CheckpointConfig(StrictModel):
    format_version: Literal[1] = FORMAT_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    family: str
    description: str = ""
    generator: GeneratorSpec
    encoder: EncoderSpec | None = None  # ae, conv-ae and vae: encoder.safetensors
    z_dim: int = Field(ge=0, le=4096)  # 0 for a translator (no latent), else ≥ 1
    num_classes: int = Field(ge=0, le=1000)
    class_names: list[str]
    image: ImageSpec
    input: TranslatorInput | None = None  # translators only: the image they take (``generator(x)``)
    value_range: tuple[float, float] = (-1.0, 1.0)
    sampleable: bool = True
    dataset: DatasetInfo
    training: TrainingInfo
    metrics: dict[str, Any] = {}
    evaluator_sha256: str | None = None
    generator_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    weights_dtype: Literal["float32", "float16"] = "float32"
    # The truncation ψ (z scaled by ψ) the model is sampled at when a request, `sample` or `evaluate` gives
    # none; `metrics` are measured at it. Set by `evaluate --truncation ψ`; 1 (none) unless so set.
    truncation: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or any(not n or n.isdigit() for n in v):
            raise ValueError("class_names must be unique, non-empty and not plain numbers")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> CheckpointConfig:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class_names for num_classes={self.num_classes}")
        kw = self.generator.kwargs
        expect = {"z_dim": self.z_dim, "num_classes": self.num_classes, "channels": self.image.channels,
                  "resolution": self.image.height}
        for key, value in expect.items():
            if key in kw and kw[key] != value:
                raise ValueError(f"generator.kwargs.{key}={kw[key]} but config says {value}")
        if self.image.height != self.image.width:
            raise ValueError("only square images are supported")
        if self.input is None and self.z_dim < 1:
            raise ValueError("z_dim must be ≥ 1 (only a translator, with an `input`, has no latent)")
        if self.input is not None:
            if self.z_dim != 0 or self.num_classes != 0 or self.sampleable:
                raise ValueError("a translator (with an `input`) has z_dim 0, num_classes 0 and sampleable false")
            if "in_channels" in kw and kw["in_channels"] != self.input.channels:
                raise ValueError(f"generator.kwargs.in_channels={kw['in_channels']} but input.channels is "
                                 f"{self.input.channels}")
        return self

    @property
    def translator(self) -> bool:
        """Called as ``generator(x)`` on an image (``input`` says which), not on a latent."""
        return self.input is not None

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def version(self) -> str:
        """The model's version: the first 12 hex digits of its weights' sha256 (URLs, cards, headers)."""
        return self.generator_sha256[:12]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; checkpoints are read by other users (containers)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def weights_bytes(module: nn.Module, dtype: str = "float32", metadata: dict[str, str] | None = None) -> bytes:
    """A module's state dict as safetensors bytes (float tensors cast to ``dtype``)."""
    cast = {"float32": torch.float32, "float16": torch.float16}[dtype]
    state = {
        k: (v.detach().to("cpu", cast) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in module.state_dict().items()
    }
    meta = metadata if metadata is not None else {"ganserve_format_version": str(FORMAT_VERSION)}
    return canonical_metadata_order(st_save(state, metadata={"format": "pt", **meta}))


def canonical_metadata_order(data: bytes) -> bytes:
    """The same safetensors bytes with the header's ``__metadata__`` entries in sorted order.

    safetensors (0.8.0 here) writes the metadata map in a random order on every save
    (safetensors/safetensors#584), so the same weights could get a different sha256 each time they
    were saved. The header is re-written with the same compact JSON and the same padded length
    (only the order of the metadata entries changes), so the tensor offsets stay valid.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.get("__metadata__")
    if not meta:
        return data
    header["__metadata__"] = dict(sorted(meta.items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # cannot happen for a reordering; keep the original rather than break the file
        return data
    return data[:8] + text + b" " * (n - len(text)) + data[8 + n :]


def save_checkpoint(
    out_dir: str | Path, generator: nn.Module, config: dict[str, Any], samples_png: bytes | None = None,
    dtype: str = "float32", encoder: tuple[nn.Module, str] | None = None,
) -> CheckpointConfig:
    """Write a checkpoint folder. ``config`` is everything but the weights' sha256 and dtype; ``encoder`` is
    (the encoder, what it outputs: "code" or "mean-logvar"), written as encoder.safetensors, its spec and
    sha256 into config.json (the encoder records its own class and kwargs in its ``spec``).

    Crash-safe at every point: the new weights are first staged under a hidden name that
    carries their sha256, then config.json is replaced (the commit point), then the staged
    files are renamed to generator.safetensors (and encoder.safetensors). A process killed before the
    commit leaves the old files; one killed after it leaves the new config beside its staged weights,
    which ``load_generator`` and ``load_encoder`` find by the sha256 the config names.
    """
    out = Path(out_dir)
    data = weights_bytes(generator, dtype)
    digest = sha256_bytes(data)
    config = {**config, "generator_sha256": digest, "weights_dtype": dtype}
    renames = [(staged_weights(out, digest), out / WEIGHTS)]
    if encoder is not None:
        module, output = encoder
        enc_data = weights_bytes(module, dtype)
        enc_digest = sha256_bytes(enc_data)
        spec = getattr(module, "spec", None)
        if not isinstance(spec, dict):
            raise TypeError(f"{type(module).__name__} records no spec (class and kwargs) to rebuild it from")
        config["encoder"] = {**spec, "output": output, "sha256": enc_digest}
        renames.append((staged_weights(out, enc_digest, "encoder"), out / ENCODER))
    cfg = CheckpointConfig.model_validate(config)
    atomic_write_bytes(renames[0][0], data)
    if encoder is not None:
        atomic_write_bytes(renames[1][0], enc_data)
    if samples_png is not None:
        atomic_write_bytes(out / SAMPLES, samples_png)
    atomic_write_json(out / CONFIG, cfg.model_dump(mode="json", by_alias=True))
    for staged, final in renames:
        os.replace(staged, final)
    if encoder is None:
        (out / ENCODER).unlink(missing_ok=True)  # a folder re-used for a model without one
    for stale in [*out.glob(".generator-*.safetensors"), *out.glob(".encoder-*.safetensors")]:  # earlier crashes
        stale.unlink(missing_ok=True)
    return cfg


def staged_weights(folder: Path, sha256: str, stem: str = "generator") -> Path:
    """Where ``save_checkpoint`` stages weights before config.json names them."""
    return folder / f".{stem}-{sha256}.safetensors"


def read_config(path: str | Path) -> CheckpointConfig:
    """Parse and validate ``config.json`` of a checkpoint folder."""
    p = Path(path) / CONFIG
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{p}: larger than {MAX_CONFIG_BYTES} bytes")
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{p}: missing (a checkpoint needs {CONFIG} and {WEIGHTS})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{p}: not valid JSON ({e})") from None
    try:
        return CheckpointConfig.model_validate(raw)
    except ValidationError as e:
        raise CheckpointError(describe_invalid(p, e)) from None


def describe_invalid(path: Path, error: ValidationError) -> str:
    """One line naming the file, the first bad field and the reason, for a config that fails validation."""
    first = error.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "(top level)"
    return f"{path}: invalid at {where}: {first['msg']} ({error.error_count()} error(s))"


def update_metrics(path: str | Path, metrics: dict[str, Any], evaluator_sha256: str | None,
                   evaluations: list[dict[str, Any]] | None = None) -> CheckpointConfig:
    """Rewrite config.json with new metrics (atomically), leaving the weights alone.

    ``evaluations`` (from ``train --eval-every``) replaces ``training.evaluations``.
    """
    cfg = read_config(path)
    update: dict[str, Any] = {"metrics": {**cfg.metrics, **metrics}, "evaluator_sha256": evaluator_sha256}
    if "truncation" in metrics:  # the ψ they were measured at becomes the one the model is served at
        update["truncation"] = float(metrics["truncation"])
    if evaluations is not None:
        update["training"] = cfg.training.model_copy(update={"evaluations": list(evaluations)})
    new = cfg.model_copy(update=update)
    atomic_write_json(Path(path) / CONFIG, new.model_dump(mode="json", by_alias=True))
    return new


def read_weights(folder: Path, name: str, sha256: str, stem: str) -> dict[str, torch.Tensor]:
    """The tensors of ``folder/name`` (float32), after checking their bytes against ``sha256``."""
    wpath = folder / name
    try:
        data: bytes | None = wpath.read_bytes()
    except FileNotFoundError:
        data = None
    if data is None or sha256_bytes(data) != sha256:
        # A writer killed between its commit (config.json) and its last rename leaves the
        # weights config.json names under their staging name.
        staged = staged_weights(folder, sha256, stem)
        with contextlib.suppress(FileNotFoundError):
            data = staged.read_bytes()
    if data is None:
        raise CheckpointError(f"{wpath}: missing (only safetensors weights are loaded, never pickles)")
    digest = sha256_bytes(data)
    if digest != sha256:
        raise CheckpointError(
            f"{wpath}: sha256 {digest[:12]}… does not match config.json's {sha256[:12]}… "
            "(truncated, corrupt, swapped or still being written)"
        )
    try:
        state = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath}: not a valid safetensors file ({e})") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_state(module: nn.Module, state: dict[str, torch.Tensor], wpath: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = str(e).splitlines()[0] if str(e) else "mismatch"
        raise CheckpointError(f"{wpath}: weights do not match config.json's architecture ({msg})") from None
    module.eval().requires_grad_(False)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointConfig]:
    """Load a checkpoint folder → (generator in eval mode on ``device``, validated config).

    The generator is called as ``generator(z, labels)``; a translator's (``config.input`` set, pix2pix) as
    ``generator(x)`` with x (B, input.channels, input.height, input.width) in [-1, 1]. Both return images
    (B, image.channels, image.height, image.width) in [-1, 1].

    Raises CheckpointError naming the file and the reason: missing or invalid config,
    missing weights, sha256 mismatch (truncated, corrupt, swapped or half-written),
    unparsable safetensors, or weights that do not match the architecture in config.json.
    Pickle files are never read, whatever the folder holds.
    """
    folder = Path(path)
    cfg = read_config(folder)
    state = read_weights(folder, WEIGHTS, cfg.generator_sha256, "generator")
    try:
        generator = build_generator(cfg.generator.class_name, dict(cfg.generator.kwargs))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG}: cannot build {cfg.generator.class_name}: {e}") from None
    load_state(generator, state, folder / WEIGHTS)
    return generator.to(device), cfg


def load_encoder(path: str | Path, generator: nn.Module, cfg: CheckpointConfig,
                 device: str | torch.device = "cpu") -> LatentEncoder:
    """The encoder of a checkpoint folder whose ``generator`` and ``cfg`` ``load_generator`` returned, as a
    :class:`LatentEncoder`: images (B, C, H, W) in [-1, 1] → the z (B, cfg.z_dim) that generator takes; in
    eval mode on ``device``. Checked like the generator (sha256, safetensors only, architecture); a
    checkpoint without an encoder is a CheckpointError."""
    folder = Path(path)
    spec = cfg.encoder
    if spec is None:
        raise CheckpointError(f"{folder / CONFIG}: this checkpoint ({cfg.family}) has no encoder")
    state = read_weights(folder, ENCODER, spec.sha256, "encoder")
    try:
        encoder = build_encoder(spec.class_name, dict(spec.kwargs))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG}: cannot build encoder {spec.class_name}: {e}") from None
    load_state(encoder, state, folder / ENCODER)
    latent = LatentEncoder(encoder, spec.output, generator).eval().requires_grad_(False)
    return latent.to(device)
