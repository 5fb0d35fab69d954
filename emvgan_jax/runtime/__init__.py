"""What runs carry out, whatever the model: the device mesh, checkpoints, restoring a run, the metric logger,
model selection, the shared plumbing of the command-line tools, and many runs for `sweep` and `tune`.

  sharding.py     mesh, parameter-sharding rules, the abstract (shape + sharding) state
  checkpoint.py   Orbax `latest`/`best` managers and the training run's `RunCheckpointer`
  restore.py      a workdir back to (config, family, state, standardisation), for the tools
  logger.py       `MetricLogger`: metrics.jsonl, TensorBoard, progress, non-finite checks
  selection.py    `Selection`: early stopping, with the best state's copy
  cli.py          flags, logging, one-line errors of the tools
  experiments.py  train-or-reuse and mean +- sample std over runs (`sweep`, `tune`)
"""
