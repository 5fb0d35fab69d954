"""Feature extraction: audio and video files -> EmoMV-compatible VGGish-128 and SlowFast-2304 vectors, in Flax
(`emvgan-extract` runs `pipeline.py`; docs/data.md, "Extracting features from your own clips")."""
