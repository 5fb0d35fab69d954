"""The commands: flags over the library, each a console script (`emvgan-evaluate`, ...) and `python -m
emvgan_jax.tools.<name>`. A command parses its flags before it imports JAX, so `--help` and a usage error answer
at once; `cli.py` is what they share."""
