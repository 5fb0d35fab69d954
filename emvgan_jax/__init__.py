"""EMVGAN and the EmoMV benchmark models in JAX/Flax."""
