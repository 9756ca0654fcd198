"""The model registry: which checkpoints are served, which were refused and why.

Every sub-folder ``<name>/`` of the checkpoints folder holding ``config.json`` and
``generator.safetensors`` is loaded with ``training.checkpoint.load_generator`` (safetensors
only, sha256 checked, config validated), placed on the device and run once on a warm-up
batch. Anything else — a pickle, a loose weights file, a corrupt or mismatched checkpoint,
a folder whose name is not a model name — is refused with a log line and listed with its
reason, while the other models go on serving. ``refresh()`` rescans the folder by
(inode, size, mtime) so that checkpoints added, replaced or removed are picked up without
a restart; a replacement that fails to load leaves the previous version serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.batcher import Batcher
from app.imagein import (
    ENCODE,
    RECONSTRUCT,
    TRANSLATE,
    LatentWithError,
    Reconstructor,
    Translator,
    check_images,
    to_float32,
)
from app.inference import Health, Prepared, default_max_batch, make_forward, prepare_checked, worker_plan
from app.metrics import Metrics
from app.settings import Settings
from training.checkpoint import CONFIG, ENCODER, NAME_PATTERN, SAMPLES, WEIGHTS, CheckpointConfig, CheckpointError
from training.checkpoint import load_encoder as _load_encoder
from training.checkpoint import load_generator as _load_generator
from training.images import to_uint8
from training.latent import latents

log = logging.getLogger(__name__)

NAME_RE = re.compile(NAME_PATTERN)
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar")
RESERVED = {"evaluators"}  # checkpoints/evaluators/ holds the evaluator CNNs, not generators
MAX_SAMPLES_BYTES = 8 << 20

Fingerprint = tuple[tuple[str, int, int, int], ...]

# Indirection so tests can slow down or break loading.
load_generator = _load_generator
load_encoder = _load_encoder


class UnknownModel(LookupError):
    pass


@dataclass
class LoadedModel:
    name: str
    config: CheckpointConfig
    generator: nn.Module  # as served: the prepared module checked at load (app.inference), run by the batcher
    device: torch.device
    fingerprint: Fingerprint
    loaded_at: float  # unix time
    load_seconds: float
    samples_png: bytes | None
    batcher: Batcher | None  # z → images: None when the checkpoint has no generator that draws a latent
    health: Health = field(default_factory=Health)  # recent forward passes, for /readyz
    batch_invariant: bool = True  # same image however a latent is batched (checked at load); else weak ETags
    exact_products: bool = False  # served with float64 matrix products: float32 ones failed the check
    # Image-in (app.imagein): RECONSTRUCT / ENCODE → the module that answers it, and its batcher once started
    image_modules: dict[str, nn.Module] = field(default_factory=dict)
    image_batchers: dict[str, Batcher] = field(default_factory=dict)

    @property
    def sampleable(self) -> bool:
        """Draws images from seeds (/generate without z): a sampleable checkpoint with its batcher."""
        return self.batcher is not None and self.config.sampleable

    @property
    def capabilities(self) -> list[str]:
        """What the model answers: sample (seeds), and the image-in routes it has a module for."""
        return (["sample"] if self.sampleable else []) + sorted(self.image_modules)


@dataclass(frozen=True)
class Refusal:
    name: str  # the entry's name in the checkpoints folder
    reason: str
    since: float  # unix time
    fingerprint: Fingerprint
    still_serving: bool = False  # an update was refused; the previous version goes on serving


@dataclass(frozen=True)
class _Entry:
    name: str
    is_dir: bool
    fingerprint: Fingerprint
    pickles: tuple[str, ...] = ()


def _fingerprint(paths: list[Path]) -> Fingerprint:
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((p.name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class Registry:
    def __init__(self, settings: Settings, device: torch.device, metrics: Metrics) -> None:
        self.settings = settings
        self.root = Path(settings.checkpoints)
        self.device = device
        self.metrics = metrics
        self.models: dict[str, LoadedModel] = {}
        self.refused: dict[str, Refusal] = {}
        self.initial_load_done = False
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- lookups

    @property
    def ready(self) -> bool:
        return self.initial_load_done and any(m.sampleable or m.image_modules for m in self.models.values())

    @property
    def default_name(self) -> str | None:
        wanted = self.settings.default_model
        model = self.models.get(wanted)
        if model is not None and model.sampleable:
            return wanted
        sampleable = sorted(n for n, m in self.models.items() if m.sampleable)
        return sampleable[0] if sampleable else None

    def failing(self) -> list[str]:
        """Sampleable models whose recent forward passes all failed (NaN output, device errors)."""
        return sorted(n for n, m in self.models.items() if m.sampleable and m.health.failing)

    def get(self, name: str) -> LoadedModel:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModel(name) from None

    def names(self) -> list[str]:
        return sorted(self.models)

    # ----------------------------------------------------------------- scanning

    def _scan(self) -> dict[str, _Entry]:
        entries: dict[str, _Entry] = {}
        try:
            children = sorted(self.root.iterdir())
        except OSError as e:
            log.error("checkpoints folder %s cannot be read: %s", self.root, e)
            return entries
        for child in children:
            name = child.name
            if name.startswith((".", "_")) or name in RESERVED:
                continue
            try:
                if child.is_dir():
                    files = [child / CONFIG, child / WEIGHTS, child / ENCODER, child / SAMPLES]
                    pickles = tuple(sorted(p.name for p in child.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES))
                    entries[name] = _Entry(name, True, _fingerprint(files), pickles)
                elif child.suffix.lower() in (*PICKLE_SUFFIXES, ".safetensors"):
                    entries[name] = _Entry(name, False, _fingerprint([child]))
            except OSError as e:  # unreadable entry: skip it this round, keep scanning the others
                log.warning("checkpoints: cannot read %s: %s", child, e)
        return entries

    def _relative(self, message: str) -> str:
        """Error messages name files relative to the checkpoints folder (no server paths in /models)."""
        return message.replace(f"{self.root}/", "").replace(f"{self.root.resolve()}/", "")

    def _load(self, entry: _Entry) -> LoadedModel:
        """Load, check and warm up one checkpoint folder (runs in a worker thread)."""
        if not entry.is_dir:
            kind = "pickle file" if not entry.name.endswith(".safetensors") else "loose weights file"
            raise CheckpointError(
                f"{entry.name}: {kind} refused: a checkpoint is a folder <name>/ holding {CONFIG} and {WEIGHTS}"
                + ("; pickles are never loaded" if kind == "pickle file" else "")
            )
        if not NAME_RE.match(entry.name):
            raise CheckpointError(f"{entry.name}/: folder name is not a model name (pattern {NAME_PATTERN})")
        if entry.pickles:
            log.warning("checkpoint %s: ignoring pickle file(s) %s: never loaded", entry.name, ", ".join(entry.pickles))
        folder = self.root / entry.name
        start = time.perf_counter()
        generator, config = load_generator(folder, self.device)
        if config.name != entry.name:
            raise CheckpointError(f"{entry.name}/{CONFIG}: name {config.name!r} differs from its folder name")
        invariant, exact = True, False
        modules: dict[str, nn.Module] = {}
        if config.input is not None:  # a translator: generator(x), no latent (app.imagein)
            modules = {TRANSLATE: self._checked(Translator(generator), config, config.input.channels, "translator")}
        else:
            self._warm_up(generator, config)
            loaded = generator
            # An autoencoder's decoder is served too: it draws the explicit latents its encoder gives.
            if config.sampleable or config.encoder is not None:  # from here on, the module is the one checked
                prepared = self._prepare(generator, config)
                generator, invariant, exact = prepared.module, prepared.batch_invariant, prepared.exact_products
            if config.encoder is not None:
                modules = self._encoder_modules(folder, loaded, generator, config)
        samples: bytes | None = None
        spath = folder / SAMPLES
        try:
            if spath.stat().st_size <= MAX_SAMPLES_BYTES:
                samples = spath.read_bytes()
        except OSError:
            samples = None
        return LoadedModel(
            name=entry.name, config=config, generator=generator, device=self.device,
            fingerprint=entry.fingerprint, loaded_at=time.time(), load_seconds=time.perf_counter() - start,
            samples_png=samples, batcher=None, batch_invariant=invariant, exact_products=exact, image_modules=modules,
        )

    def _warm_up(self, generator: nn.Module, config: CheckpointConfig) -> None:
        """One forward pass: compiles kernels, allocates memory, and checks the output shape."""
        k = self.settings.warmup_batch
        z = latents(list(range(k)), config.z_dim).to(self.device)
        labels = torch.arange(k, device=self.device) % config.num_classes if config.conditional else None
        try:
            with torch.inference_mode():
                out = generator(z, labels)
        except Exception as e:  # any failure here means config.json does not describe these weights
            raise CheckpointError(f"{config.name}: warm-up forward pass failed: {type(e).__name__}: {e}") from None
        want = (k, config.image.channels, config.image.height, config.image.width)
        if tuple(out.shape) != want:
            raise CheckpointError(f"{config.name}: generator makes {tuple(out.shape)} images, config.json says {want}")
        if not bool(torch.isfinite(out).all()):
            raise CheckpointError(f"{config.name}: warm-up produced NaN or infinite pixels")

    def _prepare(self, generator: nn.Module, config: CheckpointConfig) -> Prepared:
        """The module the batcher will serve, checked as its workers will run it (``app.inference``)."""
        s = self.settings
        _, threads = worker_plan(self.device, s.inference_workers, s.inference_threads or -1, s.cores)
        rows = s.max_batch or default_max_batch(self.device)
        return prepare_checked(generator, self.device, config.z_dim, config.num_classes, rows, threads, config.name)

    def _checked(self, module: nn.Module, config: CheckpointConfig, in_channels: int, what: str,
                 out_shape: tuple[int, ...] | None = None) -> nn.Module:
        """An image-in module (images (B, in_channels, H, W) in [-1, 1] → ``out_shape`` rows, by default the
        model's images), warmed up, then prepared and checked as a generator is: the same image gives the
        same answer however it is batched (``app.inference.prepare_checked``)."""
        s = self.settings
        _, threads = worker_plan(self.device, s.inference_workers, s.inference_threads or -1, s.cores)
        rows = s.max_batch or default_max_batch(self.device)
        images = check_images(rows, in_channels, config.image.height)  # (rows, C_in, H, W)
        want = out_shape or (config.image.channels, config.image.height, config.image.width)
        try:
            with torch.inference_mode():
                out = module(images[:2].to(self.device), None)
        except Exception as e:  # config.json does not describe these weights
            raise CheckpointError(f"{config.name}: {what} warm-up failed: {type(e).__name__}: {e}") from None
        if tuple(out.shape[1:]) != tuple(want) or not bool(torch.isfinite(out).all()):
            raise CheckpointError(f"{config.name}: the {what} answers {tuple(out.shape[1:])} per image (finite: "
                                  f"{bool(torch.isfinite(out).all())}), config.json says {tuple(want)}")
        prepared = prepare_checked(module, self.device, config.z_dim, 0, rows, threads, f"{config.name} {what}",
                                   inputs=images)
        if not prepared.batch_invariant:
            log.warning("model %s: its %s's answers differ by batch on this device", config.name, what)
        return prepared.module

    def _encoder_modules(self, folder: Path, loaded: nn.Module, served: nn.Module,
                         config: CheckpointConfig) -> dict[str, nn.Module]:
        """RECONSTRUCT and ENCODE of a checkpoint with an encoder (``app.imagein``): its encoder, prepared and
        checked (the same image gives the same latent however it is batched), composed with the served
        generator (``served``, what /generate runs)."""
        encoder = load_encoder(folder, loaded, config, self.device)
        checked = self._checked(encoder, config, config.image.channels, "encoder", (config.z_dim,))
        return {RECONSTRUCT: Reconstructor(checked, served), ENCODE: LatentWithError(checked, served)}

    def _start_batcher(self, model: LoadedModel) -> None:
        s = self.settings

        def batcher(name: str, module: nn.Module, num_classes: int, forward: Any) -> Batcher:
            return Batcher(name, module, model.device, num_classes, max_batch=s.max_batch, max_wait_ms=s.max_wait_ms,
                           queue_size=s.queue_size, metrics=self.metrics, forward=forward,
                           workers=s.inference_workers, threads=s.inference_threads or -1, cores=s.cores)

        if model.config.sampleable or model.config.encoder is not None:
            model.batcher = batcher(model.name, model.generator, model.config.num_classes, make_forward(model.health))
            model.batcher.start()
        for kind, module in sorted(model.image_modules.items()):
            convert = to_float32 if kind == ENCODE else to_uint8
            b = batcher(f"{model.name}:{kind}", module, 0, make_forward(model.health, convert))
            b.start()
            model.image_batchers[kind] = b

    def _retire(self, model: LoadedModel) -> None:
        for b in [model.batcher, *model.image_batchers.values()]:
            if b is None:
                continue
            task = asyncio.get_running_loop().create_task(b.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def refresh(self) -> None:
        """Bring the registry in line with the folder: load new or changed entries, drop removed ones."""
        async with self._lock:
            entries = await asyncio.to_thread(self._scan)
            for name, entry in entries.items():
                current = self.models.get(name)
                if current is not None and current.fingerprint == entry.fingerprint:
                    continue
                refusal = self.refused.get(name)
                if refusal is not None and refusal.fingerprint == entry.fingerprint:
                    continue
                await self._load_entry(entry, current)
            for name in [n for n in self.models if n not in entries]:
                log.info("model %s: checkpoint removed, unloading", name)
                self._retire(self.models.pop(name))
                self.metrics.reloads.labels("removed").inc()
            for name in [n for n in self.refused if n not in entries]:
                del self.refused[name]
            self.metrics.models_loaded.set(len(self.models))
            self.metrics.models_refused.set(len(self.refused))
            self.metrics.set_models((n, m.config.version, m.config.family) for n, m in self.models.items())

    async def _load_entry(self, entry: _Entry, current: LoadedModel | None) -> None:
        verb = "reloading" if current is not None else "loading"
        log.info("model %s: %s from %s", entry.name, verb, self.root / entry.name)
        try:
            model = await asyncio.to_thread(self._load, entry)
        except Exception as e:  # CheckpointError, or anything torch raises while building or loading
            reason = self._relative(str(e) if isinstance(e, CheckpointError) else f"{type(e).__name__}: {e}")
            keep = current is not None
            log.error("checkpoint %s refused: %s%s", entry.name, reason,
                      " (the previous version goes on serving)" if keep else "")
            self.refused[entry.name] = Refusal(entry.name, reason, time.time(), entry.fingerprint, keep)
            self.metrics.reloads.labels("refused").inc()
            return
        self._start_batcher(model)
        self.models[entry.name] = model
        self.refused.pop(entry.name, None)
        if current is not None:
            self._retire(current)
        self.metrics.reloads.labels("loaded").inc()
        c = model.config
        log.info("model %s: ready on %s (%s, %d classes, %dx%dx%d, sha256 %s…, %.2fs)", c.name, self.device,
                 c.family, c.num_classes, c.image.channels, c.image.height, c.image.width,
                 c.generator_sha256[:12], model.load_seconds)

    async def run_initial_load(self) -> None:
        await self.refresh()
        self.initial_load_done = True
        log.info("registry: %d model(s) loaded, %d refused, default %s; ready=%s",
                 len(self.models), len(self.refused), self.default_name, self.ready)

    async def watch(self) -> None:
        """Rescan the folder every ``reload_interval_s`` seconds (hot reload)."""
        interval = self.settings.reload_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # a rescan must never kill the watcher
                log.exception("checkpoint rescan failed")

    async def close(self) -> None:
        for model in list(self.models.values()):
            self._retire(model)
        self.models = {}
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
