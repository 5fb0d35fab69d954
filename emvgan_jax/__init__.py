"""EMVGAN and the EmoMV benchmark models in JAX/Flax (docs/architecture.md maps the package).

`emvgan_jax.load_run(workdir)` is the Python API (`emvgan_jax/api.py`).
"""

from typing import Any

__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
  # Lazy, so that `import emvgan_jax` (and reading the version) does not import JAX.
  if name in ("load_run", "TrainedRun"):
    from emvgan_jax import api  # deferred: `import emvgan_jax` (and its version) loads no JAX

    return getattr(api, name)
  raise AttributeError(f"module 'emvgan_jax' has no attribute {name!r}")
