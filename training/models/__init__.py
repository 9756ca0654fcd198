"""Network families, one module each, registered by name.

``GENERATORS`` rebuilds a generator from config.json; ``FAMILIES`` says how to train one.
"""

from training.models.registry import (
    ENCODERS,
    FAMILIES,
    GENERATORS,
    ArchOptions,
    Family,
    build_encoder,
    build_generator,
    family_names,
    get_family,
)

__all__ = ["ENCODERS", "FAMILIES", "GENERATORS", "ArchOptions", "Family", "build_encoder", "build_generator",
           "family_names", "get_family"]
