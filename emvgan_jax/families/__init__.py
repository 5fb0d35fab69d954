"""Model families: for each, its init, optimisers, train step and predict step (`Family`), built from the config.

A new model is a module in `models/`, a family file here with a `build(config) -> Family`, one entry in
`FAMILIES`, and a config section in `config_lib.py` (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from emvgan_jax.families import baseline, emvgan
from emvgan_jax.families.base import Family, TrainState

# config.model -> the family's builder.
FAMILIES: dict[str, Callable[[ml_collections.ConfigDict], Family]] = {
  "emvgan": emvgan.build,
  "baseline": baseline.build,
}


def build(config: ml_collections.ConfigDict) -> Family:
  """The family of `config.model`, built from the config."""
  if config.model not in FAMILIES:
    raise ValueError(f"config.model must be one of {sorted(FAMILIES)}, got {config.model!r}")
  return FAMILIES[config.model](config)


__all__ = ["FAMILIES", "Family", "TrainState", "build"]
