"""Feature extraction: audio and video files -> EmoMV-compatible VGGish-128 and SlowFast-2304 vectors.

`audio.py` is VGGish's log-mel front end, `vggish.py` and `slowfast.py` are the two networks in Flax (their
parameter names mirror the PyTorch reference implementations, so `convert` maps a state dict one to one),
`media.py` decodes files with PyAV, `weights.py` fetches and converts the published weights.
`python -m emvgan_jax.extract` is the command (docs/data.md, "Extracting features from your own clips").
"""
