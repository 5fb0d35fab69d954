"""EMVGAN and the EmoMV benchmark models in JAX/Flax (docs/architecture.md maps the package)."""

__version__ = "0.2.0"
