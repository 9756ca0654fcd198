"""Service settings, read from the environment with the ``GANSERVE_`` prefix."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda|cuda:\d{1,2})$")


class Settings(BaseSettings):
    """Everything the service reads from its environment (``GANSERVE_CHECKPOINTS=...`` etc.)."""

    model_config = SettingsConfigDict(env_prefix="GANSERVE_", extra="ignore", frozen=True)

    checkpoints: Path = Field(default=Path("checkpoints"), description="folder holding one sub-folder per checkpoint")
    device: str = Field(default="auto", description="auto (cuda, else mps, else cpu) | cpu | cuda | cuda:N | mps")
    default_model: str = Field(default="mnist-cgan", description="model used when a request names none")

    # Micro-batching: concurrent requests for one model share one forward pass.
    max_batch: int = Field(default=64, ge=1, le=1024, description="most latents in one forward pass")
    max_wait_ms: float = Field(default=2.0, ge=0, le=1000, description="longest wait for more requests to join a batch")
    queue_size: int = Field(default=256, ge=1, description="requests waiting per model before 503 + Retry-After")
    request_timeout_s: float = Field(default=30.0, gt=0, description="per-request deadline for generation")
    warmup_batch: int = Field(default=8, ge=1, le=1024, description="latents in the warm-up forward pass")

    # Limits of one request (besides n ≤ 64, frames ≤ 120, scale ≤ 8 of the HTTP contract).
    max_image_pixels: int = Field(default=4_194_304, ge=1, description="pixels of one PNG (a grid or a strip)")
    max_animation_pixels: int = Field(default=16_777_216, ge=1, description="pixels of all the frames of one GIF")

    reload_interval_s: float = Field(default=5.0, ge=0, description="seconds between checkpoint-folder rescans; 0: off")
    cache_size: int = Field(default=512, ge=0, description="encoded images of seeded requests kept in memory (LRU)")

    log_level: str = Field(default="INFO", description="DEBUG | INFO | WARNING | ERROR")
    enable_docs: bool = True
    enable_metrics: bool = True
    cors_origins: list[str] = Field(default_factory=list, description='JSON list, e.g. ["http://localhost:5173"]')

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        v = v.strip().lower()
        if not DEVICE_PATTERN.match(v):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got {v!r}")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.strip().upper()
        if v not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {v!r}")
        return v
