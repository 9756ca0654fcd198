"""Name → class registries, filled by decorators (plain dicts, no dotted-string lookups).

``GENERATORS`` maps a class name written in ``config.json`` to the generator class that
rebuilds it; ``FAMILIES`` maps a ``--family`` name to how that family is trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from torch import nn

Objective = Literal["gan", "acgan", "wgan-gp", "vae", "ae", "pix2pix"]

GENERATORS: dict[str, type[nn.Module]] = {}
ENCODERS: dict[str, type[nn.Module]] = {}
FAMILIES: dict[str, Family] = {}

T = TypeVar("T", bound=type[nn.Module])


def register_generator(cls: T) -> T:
    """Make ``cls`` rebuildable from ``{"class": cls.__name__, "kwargs": {...}}``."""
    if cls.__name__ in GENERATORS:
        raise ValueError(f"generator class {cls.__name__} registered twice")
    GENERATORS[cls.__name__] = cls
    return cls


def register_encoder(cls: T) -> T:
    """Make the encoder ``cls`` rebuildable from ``{"class": cls.__name__, "kwargs": {...}}`` (encoder.safetensors)."""
    if cls.__name__ in ENCODERS:
        raise ValueError(f"encoder class {cls.__name__} registered twice")
    ENCODERS[cls.__name__] = cls
    return cls


@dataclass(frozen=True)
class Family:
    """How one ``--family`` is built and trained.

    ``build`` takes the resolved architecture options and returns
    ``(generator_class_name, generator_kwargs, discriminator_or_encoder)``; the
    generator is built from the first two so that config.json can rebuild it.
    """

    name: str
    objective: Objective
    conditional: bool
    sampleable: bool
    build: Callable[[ArchOptions], tuple[str, dict[str, Any], nn.Module]]
    description: str
    conv_discriminator: bool = False  # its discriminator takes ArchOptions.minibatch_std and .spectral_norm
    translator: bool = False  # its generator translates an image, ``generator(x)``: no latent, no labels


@dataclass(frozen=True)
class ArchOptions:
    """Architecture options every family understands (the ones it ignores are unused)."""

    z_dim: int
    num_classes: int
    channels: int
    resolution: int
    width: int  # ngf / ndf, the base channel count
    upsample: str  # "convT" | "nearest-conv"
    bn: str  # "before-act" | "after-act"
    minibatch_std: bool = False  # discriminators that support it add a minibatch standard-deviation channel
    spectral_norm: bool = False  # ... and spectrally normalise their layers instead of batch-/layer-norm
    projection: bool = False  # D judges the label by projection: a cGAN's instead of label maps, an ACGAN's too
    categories: int = 0  # unconditional generators: a K-way categorical code in the latent (InfoGAN)
    self_condition: bool = False  # ... that D takes as a label (with real images' clusters), not a Q head
    recluster: bool = False  # ... with clusters re-found on D's features: D conditions by projection
    input_channels: int = 0  # translators: the channels of the image they take (the pair transform's)


def register_family(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name} registered twice")
    FAMILIES[family.name] = family
    return family


def build_generator(class_name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Rebuild a generator from its registered class name and JSON kwargs."""
    _load_all()
    try:
        cls = GENERATORS[class_name]
    except KeyError:
        raise ValueError(
            f"unknown generator class {class_name!r}; known: {sorted(GENERATORS)}"
        ) from None
    return cls(**kwargs)


def build_encoder(class_name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Rebuild an encoder from its registered class name and JSON kwargs."""
    _load_all()
    try:
        cls = ENCODERS[class_name]
    except KeyError:
        raise ValueError(f"unknown encoder class {class_name!r}; known: {sorted(ENCODERS)}") from None
    return cls(**kwargs)


def get_family(name: str) -> Family:
    _load_all()
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; choose one of {sorted(FAMILIES)}") from None


def family_names() -> list[str]:
    _load_all()
    return sorted(FAMILIES)



def _load_all() -> None:
    # Importing the family modules runs their decorators.
    from training.models import ae, dcgan, encoders, expost, mlp, pix2pix, vae  # noqa: F401
