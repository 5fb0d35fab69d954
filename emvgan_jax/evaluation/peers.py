"""Simple peers of EMVGAN, fitted with scikit-learn on the same splits: rows of the results tables.

A model that a linear classifier matches has not earned its GAN, so every table carries these beside the EmoMV
baselines (docs/models.md, section 4.6):
  logreg  per-modality multinomial logistic-regression emotion classifiers; a video and a music clip are scored
          by the dot product of their class probabilities (the chance that both show the same emotion)
  knn     k-nearest-neighbour emotion transfer: a clip's class probabilities are the emotions of its k nearest
          train clips of the same modality (cosine on standardised features); scored by the same dot product
  cca     a canonical-correlation common space fitted on the matched train pairs (after PCA of each modality,
          which 2,304-d video features on a few hundred pairs need); scored by cosine
Each peer's hyper-parameter is chosen on train alone: the best mean label mAP (both directions) over
`peer.selection_holdouts` grouped holdouts of train (`data/emomv.py`), the same kind of holdout the EMVGAN
defaults were tuned on. The chosen peer is then refitted on all of train and evaluated like any model:
`python -m emvgan_jax.main --config=configs/peers.py:logreg` or a `sweep` row. Where the networks hold out a
selection split (`data.selection_fraction > 0`), a peer fits on those rows too: it has no checkpoints to select.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from emvgan_jax import atomic, config_lib
from emvgan_jax.data import emomv
from emvgan_jax.data.splits import Split
from emvgan_jax.evaluation import alignment, metrics, protocol
from emvgan_jax.ops import l2_normalize
from emvgan_jax.runtime import provenance
from emvgan_jax.runtime import workdir as workdir_lib

KINDS = ("logreg", "knn", "cca")
# Hyper-parameter grids: logreg's inverse regularisation C, knn's k, cca's number of components.
GRIDS: dict[str, tuple[float, ...]] = {
  "logreg": (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
  "knn": (1, 5, 10, 20, 40),
  "cca": (2, 4, 8, 16),
}
DESCRIPTIONS = {
  "logreg": "Peer: logistic-regression emotion classifiers (probability dot product)",
  "knn": "Peer: k-NN emotion transfer (probability dot product)",
  "cca": "Peer: CCA common space (cosine)",
}
_CCA_PCA_DIMS = 32  # per modality, before CCA: at most a tenth of EmoMV-C's matched train pairs


class Peer:
  """A fitted peer: `embed(split) -> (video, music)` vectors and the similarity that ranks them."""

  def __init__(self, kind: str, embed: Callable[[Split], tuple[np.ndarray, np.ndarray]]):
    self.kind, self.embed = kind, embed

  def _space(self, video: np.ndarray, music: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Probability vectors are scored by their dot product; the CCA space by cosine.
    return (l2_normalize(video), l2_normalize(music)) if self.kind == "cca" else (video, music)

  def similarity(self, video: np.ndarray, music: np.ndarray) -> np.ndarray:
    """(N_video, N_music) scores: probability dot products, or cosines for the CCA space."""
    v, m = self._space(video, music)
    return v @ m.T

  def pair_scores(self, split: Split) -> np.ndarray:
    """(N,) scores of each row's own (video, music) pair: the diagonal of `similarity`."""
    v, m = self._space(*self.embed(split))
    return np.sum(v * m, axis=1)


def _segment_rows(split: Split, modality: str) -> tuple[np.ndarray, np.ndarray]:
  """(features, emotion labels) of one modality, one row per distinct segment of a pair split."""
  names = [emomv.segment_ids(n)[0 if modality == "video" else -1] for n in split.name]
  first = {}
  for i, name in enumerate(names):
    first.setdefault(name, i)
  rows = np.asarray(sorted(first.values()))
  return getattr(split, modality)[rows], getattr(split, f"{modality}_emotion")[rows]


def _probabilities(model: Any, x: np.ndarray, num_classes: int) -> np.ndarray:
  """predict_proba over all `num_classes` ids (a class absent from train gets probability 0)."""
  p = model.predict_proba(x)
  out = np.zeros((len(x), num_classes))
  out[:, model.classes_] = p
  return out


def fit(kind: str, train: Split, hyper: float, *, num_classes: int = len(emomv.EMOTIONS)) -> Peer:
  """Fits one peer with one hyper-parameter on a (standardised) train split."""
  from sklearn.cross_decomposition import CCA  # deferred: scikit-learn, only when a peer is fitted
  from sklearn.decomposition import PCA  # deferred: scikit-learn, only when a peer is fitted
  from sklearn.linear_model import LogisticRegression  # deferred: scikit-learn, only when a peer is fitted
  from sklearn.neighbors import KNeighborsClassifier  # deferred: scikit-learn, only when a peer is fitted

  if kind in ("logreg", "knn"):
    models = {}
    for modality in ("video", "music"):
      x, y = _segment_rows(train, modality)
      if kind == "logreg":
        model = LogisticRegression(C=hyper, max_iter=2000)
      else:
        model = KNeighborsClassifier(n_neighbors=min(int(hyper), len(x)), metric="cosine")
      models[modality] = model.fit(x, y)

    def embed(split: Split) -> tuple[np.ndarray, np.ndarray]:
      return tuple(_probabilities(models[m], getattr(split, m), num_classes) for m in ("video", "music"))

    return Peer(kind, embed)
  if kind == "cca":
    matched = train.take(train.match == 1)
    dims = min(_CCA_PCA_DIMS, len(matched) - 1)
    pca_v = PCA(n_components=min(dims, matched.video_dim), random_state=0).fit(matched.video)
    pca_m = PCA(n_components=min(dims, matched.music_dim), random_state=0).fit(matched.music)
    k = min(int(hyper), pca_v.n_components_, pca_m.n_components_)
    cca = CCA(n_components=k, max_iter=2000).fit(pca_v.transform(matched.video), pca_m.transform(matched.music))

    def embed(split: Split) -> tuple[np.ndarray, np.ndarray]:
      return cca.transform(pca_v.transform(split.video), pca_m.transform(split.music))

    return Peer(kind, embed)
  raise ValueError(f"config.peer.kind must be one of {KINDS}, got {kind!r}")


def _label_map(peer: Peer, gallery: Split) -> float:
  ret = protocol.retrieval_results_from_similarity(peer.similarity(*peer.embed(gallery)), gallery.video_emotion)
  return 0.5 * sum(r["map"] for r in ret.values())


def select(kind: str, train: Split, *, holdouts: int, fraction: float) -> tuple[float, dict[str, float]]:
  """The grid value with the best mean held-out label mAP over `holdouts` grouped holdouts of `train`."""
  scores = {}
  for hyper in GRIDS[kind]:
    maps = []
    for seed in range(holdouts):
      inner, held = emomv.holdout_split(train, fraction=fraction, seed=seed)
      maps.append(_label_map(fit(kind, inner, hyper), emomv.gallery_from_pairs(held)))
    scores[str(hyper)] = float(np.mean(maps))
  best = max(GRIDS[kind], key=lambda h: scores[str(h)])
  return best, scores


def _results(
  config: ml_collections.ConfigDict, peer: Peer, data: emomv.RunData, hyper: float, scores: dict[str, float]
) -> dict[str, Any]:
  """The results dict of a fitted peer, in the schema of `protocol.results`."""
  kind = config.peer.kind
  threshold = protocol.choose_threshold(peer.pair_scores(data.train), data.train.match)
  cls = metrics.classification_metrics(peer.pair_scores(data.pairs), data.pairs.match, threshold=threshold)
  out: dict[str, Any] = {
    "dataset": config.data.dataset,
    "model": f"peer_{kind}",
    "description": DESCRIPTIONS[kind],
    "seed": config.seed,
    "checkpoint_step": 0,
    "classification": {
      "split": data.pairs_name,
      "num_pairs": len(data.pairs),
      "threshold": threshold,
      "threshold_chosen_on": "train",
      **{k: float(cls[k]) for k in protocol.CLASSIFICATION_KEYS},
    },
  }
  if data.gallery is not None:
    video, music = peer.embed(data.gallery)
    sim, labels = peer.similarity(video, music), data.gallery.video_emotion
    out["retrieval"] = {
      "split": data.gallery_name,
      "gallery_size": len(data.gallery),
      **protocol.retrieval_results_from_similarity(sim, labels),
    }
    out["alignment"] = {
      "split": data.gallery_name,
      **alignment.alignment_metrics(video, music, labels, class_names=emomv.EMOTIONS),
    }
  out["chance"] = protocol.chance_levels(data.pairs, data.gallery)
  out["selection"] = {
    "split": f"train ({config.peer.selection_holdouts} grouped holdouts)",
    "metric": "gallery/map",
    "mode": "max",
    "best_value": scores[str(hyper)],
    "best_step": None,
    "chosen": {GRID_NAMES[kind]: hyper},
    "grid": scores,
  }
  return out


GRID_NAMES = {"logreg": "C", "knn": "k", "cca": "components"}


def _in_memory(data: emomv.RunData) -> emomv.RunData:
  """`data`, if its splits are in memory: scikit-learn fits on whole arrays.

  Raises:
    DataError: a split stays on disk (`data.stream_above_mb`).
  """
  if any(s is not None and s.on_disk for s in (data.train, data.pairs, data.gallery, data.selection)):
    raise emomv.DataError(
      "the peers fit scikit-learn on whole splits in memory, and this run's splits stay on disk: raise "
      "config.data.stream_above_mb above their size to hold them"
    )
  return data


def evaluate_on(
  config: ml_collections.ConfigDict,
  results: dict[str, Any],
  dataset: str,
  *,
  data_dir: str | None = None,
  manual_dir: str | None = None,
) -> dict[str, Any]:
  """A fitted peer (its `results.json` says the hyper-parameter it chose) scored on another EmoMV set.

  Peers keep no model on disk: the peer is fitted again as before (the same rows, the same chosen value; the
  refit agrees with the first fit to about 1e-6, floating-point summation order aside), on its own training
  data, and scored on `dataset`'s default split and gallery standardised with its own training statistics, as
  `evaluate --dataset` does for a network. The classification threshold stays the one chosen on its own train
  split.
  """
  from threadpoolctl import threadpool_limits  # deferred: scikit-learn's own, imported after it

  kind = config.peer.kind
  hyper = results["selection"]["chosen"][GRID_NAMES[kind]]
  own = _in_memory(emomv.load_run_data(config))
  if own.selects_apart:
    own = dataclasses.replace(own, train=Split.concat([own.train, own.selection]), selection=None)
  other = emomv.load_eval_data(
    config,
    own.standardizer,
    dataset=dataset,
    split=emomv.run_split(config, dataset),
    data_dir=data_dir,
    manual_dir=manual_dir,
    need_train_split=False,
  )
  data = dataclasses.replace(_in_memory(other), train=own.train)
  with threadpool_limits(1):
    peer = fit(kind, own.train, hyper)
    out = _results(config_lib.with_data(config, dataset=dataset), peer, data, hyper, results["selection"]["grid"])
  out["evaluation"] = {"trained_on": config.data.dataset, "standardization": f"train split of {config.data.dataset}"}
  return out


def fit_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, restart: bool = False) -> dict[str, Any]:
  """Chooses, fits and evaluates the peer of `config.peer.kind`; writes config.json and results.json (with the
  workdir locked and checked as training does: `runtime/workdir.py`)."""

  lock = workdir_lib.claim(config, workdir, restart=restart)
  try:
    return _fit_and_evaluate(config, workdir)
  finally:
    lock.release()


def _fit_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  config_json = emomv.as_recorded(config).to_json_best_effort(indent=2, sort_keys=True)
  atomic.write_text(os.path.join(workdir, "config.json"), config_json)
  kind = config.peer.kind
  if kind not in KINDS:
    raise ValueError(f"config.peer.kind must be one of {KINDS}, got {kind!r}")
  import sklearn.cross_decomposition  # noqa: F401  deferred: scikit-learn, only when a peer is fitted
  import sklearn.linear_model  # noqa: F401  deferred: scikit-learn, only when a peer is fitted
  from threadpoolctl import threadpool_limits  # deferred: scikit-learn's own, imported after it

  data = _in_memory(emomv.load_run_data(config))
  if data.selects_apart:  # a peer selects on its own holdouts: it fits on every row the networks may use
    data = dataclasses.replace(data, train=Split.concat([data.train, data.selection]), selection=None)
  # A few hundred rows: multithreaded BLAS spends more time starting threads than multiplying (one thread fits
  # the video classifier about 7x faster on 2 cores). scikit-learn is imported first so that the limit reaches the
  # BLAS library SciPy loads with it.
  with threadpool_limits(1):
    hyper, scores = select(
      kind, data.train, holdouts=config.peer.selection_holdouts, fraction=config.peer.selection_fraction
    )
    logging.info("%s: %s = %s (held-out mAP per value: %s)", DESCRIPTIONS[kind], GRID_NAMES[kind], hyper, scores)
    results = _results(config, fit(kind, data.train, hyper), data, hyper, scores)
  results["train_seconds"] = round(time.time() - t_start, 2)
  results["provenance"] = provenance.collect(
    dataset=config.data.dataset, data_dir=config.data.data_dir, manual_dir=emomv.manual_dir_from(config)
  )
  atomic.write_json(os.path.join(workdir, "results.json"), results)
  print(protocol.format_table(results), flush=True)
  return results
