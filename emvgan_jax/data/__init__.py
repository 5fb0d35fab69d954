"""Data: splits in host memory, standardisation, the grain pipeline and the host -> device seam, EmoMV's protocol.

splits.py       `Split` and reading one from the TFDS builder
standardize.py  train-split statistics, saved with every checkpoint
pipeline.py     grain train/eval iterators and `make_global_batch`, the one host -> device seam
emomv.py        EmoMV's protocol: which splits a run trains, selects and reports on; the train holdout
"""
