"""A run's state on devices and on disk, whatever the model: the mesh, checkpoints, restoring a run, the metric
logger, model selection, signals and the workdir (the map of its modules is docs/architecture.md)."""
