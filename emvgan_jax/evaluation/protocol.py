"""The evaluation protocol and the results schema (docs/models.md, section 4), shared by training and the tools.

Task 1 (classification) on a pair split: accuracy at a threshold, binary F1, ROC-AUC of the matched score.
Task 2 (retrieval) on a gallery: both directions ranked by cosine in the common space; label mAP, hit@K, and the
pair-identity Recall@K and ranks. Chance levels are computed for the very labels evaluated.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from emvgan_jax.data import pipeline
from emvgan_jax.data.emomv import EMOTIONS, RunData
from emvgan_jax.data.splits import Split
from emvgan_jax.evaluation import affect, alignment, metrics
from emvgan_jax.families import Family
from emvgan_jax.runtime import sharding

RETRIEVAL_DIRECTIONS = metrics.DIRECTIONS
# The retrieval numbers reported per direction (results.json schema), in table order.
RETRIEVAL_KEYS = (
  "map",
  "hit@1",
  "hit@3",
  "hit@5",
  "hit@10",
  "recall@1",
  "recall@5",
  "recall@10",
  "median_rank",
  "mean_rank",
)
CLASSIFICATION_KEYS = ("accuracy", "f1", "roc_auc")
ALIGNMENT_KEYS = ("centroid_gap", "modality_probe_accuracy", "true_pair_cosine", "random_pair_cosine")


def selection_metric_names(has_retrieval: bool) -> list[str]:
  """Every metric an evaluation during training computes, i.e. what `train.selection_metric` may name (the
  modality probe is fitted for final results only)."""
  names = ["pairs/loss", *(f"pairs/{k}" for k in CLASSIFICATION_KEYS)]
  if has_retrieval:
    names += [f"gallery/{k}" for k in RETRIEVAL_KEYS]
    names += [f"gallery/{d}/{k}" for d in RETRIEVAL_DIRECTIONS for k in RETRIEVAL_KEYS]
    names += [f"alignment/{k}" for k in ALIGNMENT_KEYS if k != "modality_probe_accuracy"]
  return names


# Selection metrics that need a decision threshold: for a cosine-scored model that threshold is fitted on train
# (a pass over train per evaluation), so it is only done when selection uses one of them.
THRESHOLD_METRICS = ("pairs/accuracy", "pairs/f1")


def _to_host(x: jax.Array) -> np.ndarray:
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


PREDICT_KEYS = ("video_embedding", "music_embedding", "score")
# What a model with an emotion head also gives per row, for emotion-aware ranking (evaluation/affect.py).
EMOTION_KEYS = ("video_emotion_probs", "music_emotion_probs")
# What each emotion weight trades, reported beside the run's own ranking (results.json `retrieval.by_emotion_weight`).
TRADE_KEYS = ("map", "hit@1", "recall@10", "median_rank")


class Evaluator:
  """Runs a family's jitted predict step over whole splits (compiled once per batch shape)."""

  def __init__(self, family: Family, mesh: jax.sharding.Mesh, *, batch_size: int):
    self.family = family
    self.mesh = mesh
    self.batch_size = batch_size
    self._predict = jax.jit(family.predict)
    self._batch_sharding = sharding.batch_sharding(mesh)
    self.gallery_keys = PREDICT_KEYS + (EMOTION_KEYS if family.emotion_probabilities is not None else ())

  def global_batch_rows(self, num_rows: int) -> int:
    """The global batch for a split of `num_rows` rows: the power of two at or above it, at most `batch_size`,
    rounded up to the device count. A batch near the split's size computes little padding, and splits of
    similar sizes (EmoMV-C's 72 to 96 evaluation rows) share one compiled program instead of one each (0.8 s of
    compilation per shape on 2 cores, in a run's `JAX_LOG_COMPILES=1` log)."""
    n_dev = self.mesh.shape[sharding.DATA_AXIS] * self.mesh.shape[sharding.MODEL_AXIS]
    size = min(self.batch_size, 1 << max(num_rows - 1, 0).bit_length())
    return -(-size // n_dev) * n_dev

  def predict(self, state: Any, split: Split, keys: Sequence[str] = PREDICT_KEYS) -> dict[str, Any]:
    """Per-row outputs `keys` of the model on `split` (padding removed) and its mean selection loss."""
    outs, loss_sum, count = {}, 0.0, 0
    size = self.global_batch_rows(len(split))
    for batch in pipeline.iterate(pipeline.eval_dataset(split, global_batch_size=size), prefetch=split.on_disk):
      valid = int(batch["mask"].sum())
      out = self._predict(state, pipeline.make_global_batch(batch, self._batch_sharding))
      mask = _to_host(pipeline.make_global_batch({"m": batch["mask"]}, self._batch_sharding)["m"])
      for k in keys:
        outs.setdefault(k, []).append(_to_host(out[k])[mask])
      loss_sum += float(np.asarray(out["loss"].addressable_data(0))) * valid
      count += valid
    result = {k: np.concatenate(v) for k, v in outs.items()}
    result["loss"] = loss_sum / max(count, 1)
    return result

  def evaluate(
    self,
    state: Any,
    *,
    pair_split: Split,
    gallery: Split | None,
    threshold: float | None,
    threshold_free_only: bool = False,
    alignment_probe: bool = True,
    emotion_weight: float = 0.0,
  ) -> tuple[dict[str, float], dict[str, Any]]:
    """Both tasks on one state: returns (flat metrics for logging and selection, structured results).

    Args:
      state: the train state to evaluate.
      pair_split: the classification split (its loss is the selection loss).
      gallery: the retrieval gallery, or None.
      threshold: on the matched score (None: 0.5, right for probabilities).
      threshold_free_only: report only ROC-AUC of the classification metrics (no threshold at hand).
      alignment_probe: fit the modality probe of the alignment block (several logistic regressions; the other
        alignment numbers are a few matrix products).
      emotion_weight: the gallery is ranked by `affect.similarity` at this weight (0: cosine, as in training's
        evaluations; a model without an emotion head always ranks by cosine).
    """
    pred = self.predict(state, pair_split, keys=("score",))  # a pair split's embeddings are not needed
    threshold = 0.5 if threshold is None else threshold
    cls = metrics.classification_metrics(pred["score"], pair_split.match, threshold=threshold)
    keys = ("roc_auc",) if threshold_free_only else CLASSIFICATION_KEYS
    flat = {"pairs/loss": float(pred["loss"]), **{f"pairs/{k}": float(cls[k]) for k in keys}}
    structured: dict[str, Any] = {"classification": {k: float(cls[k]) for k in keys}}
    if gallery is not None and self.family.has_retrieval:
      g = self.predict(state, gallery, keys=self.gallery_keys)
      ret = ranked_at(g, gallery.video_emotion, emotion_weight if "video_emotion_probs" in g else 0.0)
      structured["retrieval"] = {"gallery_size": len(gallery), **ret}
      if "video_emotion_probs" in g:
        structured["gallery_outputs"] = g
      for direction in RETRIEVAL_DIRECTIONS:
        for k, v in ret[direction].items():
          flat[f"gallery/{direction}/{k}"] = v
      for k in ret["video_to_music"]:
        flat[f"gallery/{k}"] = 0.5 * (ret["video_to_music"][k] + ret["music_to_video"][k])
      align = alignment.alignment_metrics(
        g["video_embedding"],
        g["music_embedding"],
        gallery.video_emotion,
        class_names=EMOTIONS,
        probe=alignment_probe,
      )
      structured["alignment"] = align
      flat.update({f"alignment/{k}": v for k, v in align.items() if not isinstance(v, dict)})
    return flat, structured


def gallery_embeddings(evaluator: Evaluator, state: Any, gallery: Split) -> dict[str, Any]:
  """The common-space vectors of every gallery item (row i = item i), as `embeddings.npz` holds them, with each
  vector's emotion probabilities for a model with an emotion head (`video_emotion_probs`, `music_emotion_probs`).

  They come from the same predict step as the retrieval metrics, so metrics recomputed from them agree.
  """
  pred = evaluator.predict(state, gallery, keys=evaluator.gallery_keys)
  out = {
    "name": np.asarray(gallery.name, dtype=str),
    "emotion": np.asarray(gallery.video_emotion, np.int32),
    "video": np.asarray(pred["video_embedding"], np.float32),
    "music": np.asarray(pred["music_embedding"], np.float32),
  }
  out.update({k: np.asarray(pred[k], np.float32) for k in EMOTION_KEYS if k in pred})
  return out


def pair_predictions(evaluator: Evaluator, state: Any, pairs: Split, threshold: float) -> dict[str, Any]:
  """Matched scores of a pair split with its labels and the decision threshold (for the confusion matrix)."""
  pred = evaluator.predict(state, pairs)
  return {"score": np.asarray(pred["score"]), "match": np.asarray(pairs.match), "threshold": float(threshold)}


def retrieval_results(video_emb: np.ndarray, music_emb: np.ndarray, labels: np.ndarray) -> dict[str, dict]:
  """Both directions' retrieval metrics for a gallery whose item i is (video_emb[i], music_emb[i])."""
  both = metrics.summarize_retrieval(video_emb, music_emb, labels)
  return {d: {k: float(both[d][k]) for k in RETRIEVAL_KEYS} for d in RETRIEVAL_DIRECTIONS}


def ranked_at(outputs: Mapping[str, np.ndarray], labels: np.ndarray, weight: float) -> dict[str, dict]:
  """`retrieval_results` of a gallery's outputs (`Evaluator.gallery_keys`) ranked by `affect.similarity`."""
  if weight == 0.0:  # plain cosine, computed exactly as before emotion-aware ranking existed
    return retrieval_results(outputs["video_embedding"], outputs["music_embedding"], labels)
  sim = affect.similarity(
    outputs["video_embedding"],
    outputs["music_embedding"],
    outputs["video_emotion_probs"],
    outputs["music_emotion_probs"],
    weight,
  )
  return retrieval_results_from_similarity(sim, labels)


def retrieval_results_from_similarity(similarity: np.ndarray, labels: np.ndarray) -> dict[str, dict]:
  """`retrieval_results` for a model that ranks by its own (video x music) score rather than by cosine."""
  ranked = {
    d: metrics.retrieval_metrics(s, labels, labels) for d, s in zip(RETRIEVAL_DIRECTIONS, (similarity, similarity.T))
  }
  return {d: {k: float(r[k]) for k in RETRIEVAL_KEYS} for d, r in ranked.items()}


def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
  """The threshold on `scores` with the best accuracy on (scores, labels) (a pair is predicted matched when its
  score is >= the threshold): of the midpoints between neighbouring distinct scores and one step beyond either
  end, the first with the highest accuracy.

  Each candidate's accuracy is counted from the sorted scores of each class (binary search): O(n log n), where
  comparing every score with every candidate is O(n x distinct scores), hours for a million training pairs.
  """
  scores = np.asarray(scores).reshape(-1)
  positive = np.asarray(labels).reshape(-1) == 1
  order = np.unique(scores)  # sorted
  candidates = np.concatenate([[order[0] - 1e-6], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-6]])
  pos, neg = np.sort(scores[positive]), np.sort(scores[~positive])
  # Correct at threshold t: positives with score >= t, and negatives with score < t.
  correct = (len(pos) - np.searchsorted(pos, candidates, side="left")) + np.searchsorted(neg, candidates, side="left")
  return float(candidates[int(np.argmax(correct))])


def chance_levels(pair_split: Split, gallery: Split | None) -> dict[str, Any]:
  cls = metrics.classification_chance(pair_split.match)
  out: dict[str, Any] = {"classification": {k: float(cls[k]) for k in CLASSIFICATION_KEYS}}
  if gallery is not None:
    ret = metrics.retrieval_chance(gallery.video_emotion, gallery.music_emotion)
    out["retrieval"] = {k: float(ret[k]) for k in RETRIEVAL_KEYS}
    # A probe that cannot tell the modalities apart guesses: the two classes are always balanced.
    out["alignment"] = {"modality_probe_accuracy": 0.5}
  return out


def _emotion_weight(
  evaluator: Evaluator, state: Any, data: RunData, given: float | None, fields: Mapping[str, Any] | None
) -> tuple[float, dict[str, Any]]:
  """The weight a run ranks by, and how it came (results.json's `retrieval.emotion_weight*` fields)."""
  if given is not None:
    weight = affect.check_weight(given, "emotion weight")
    return weight, {"emotion_weight_chosen_on": "given", **(fields or {}), "emotion_weight": weight}
  if not data.selects_apart or data.selection_gallery is None:  # never chosen on the split reported
    return 0.0, {
      "emotion_weight": 0.0,
      "emotion_weight_chosen_on": "none (no selection split apart from the reported one)",
    }
  g = evaluator.predict(state, data.selection_gallery, keys=evaluator.gallery_keys)
  weight, by_weight = affect.choose_weight(
    g["video_embedding"],
    g["music_embedding"],
    g["video_emotion_probs"],
    g["music_emotion_probs"],
    data.selection_gallery.video_emotion,
  )
  record = {
    "emotion_weight": weight,
    "emotion_weight_chosen_on": data.selection_name,
    "emotion_weight_selection_map": by_weight,  # mean label mAP of both directions on the selection gallery
  }
  return weight, record


def _chosen_for(record: dict[str, Any], checkpoint_step: int) -> dict[str, Any]:
  """`record` with the checkpoint its weight was chosen for (this one, when it was chosen here)."""
  if "emotion_weight_selection_map" in record and "emotion_weight_chosen_for_step" not in record:
    return {**record, "emotion_weight_chosen_for_step": int(checkpoint_step)}
  return record


def result_title(results: Mapping[str, Any]) -> str:
  """One line naming the model, dataset, seed, checkpoint step and selection split of a results dict."""
  return (
    f"{results.get('description', results.get('model'))} on {results['dataset']} "
    f"(seed {results.get('seed')}, checkpoint step {results.get('checkpoint_step')}; "
    f"model selected on {results.get('selection', {}).get('split', '?')})"
  )


def result_tables(results: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
  """The tables of a results dict, chance beside every number, as (heading, column names, rows of cells): what
  `format_table` prints and the HTML report (`emvgan_jax/evaluation/report.py`) shows."""
  tables = []
  chance = results.get("chance", {})
  cls = results.get("classification")
  if cls:
    rows = [
      [k, f"{cls[k]:.3f}", f"{chance.get('classification', {}).get(k, float('nan')):.3f}"]
      for k in ("accuracy", "f1", "roc_auc")
    ]
    tables.append(
      (f"Classification on {cls['split']} ({cls.get('num_pairs', '?')} pairs)", ["metric", "value", "chance"], rows)
    )
  ret = results.get("retrieval")
  if ret:
    rows = []
    for k in (k for k in RETRIEVAL_KEYS if k in ret["video_to_music"]):
      fmt = "{:.1f}" if "rank" in k else "{:.3f}"
      c = chance.get("retrieval", {}).get(k, float("nan"))
      rows.append([k, fmt.format(ret["video_to_music"][k]), fmt.format(ret["music_to_video"][k]), fmt.format(c)])
    heading = f"Retrieval on {ret['split']} ({ret['gallery_size']} items)"
    if ret.get("emotion_weight"):
      heading += f", ranked with emotion weight {ret['emotion_weight']:g} (chosen on {ret['emotion_weight_chosen_on']})"
    tables.append((heading, ["metric", "video->music", "music->video", "chance"], rows))
    trades = ret.get("by_emotion_weight")
    if trades:
      columns = ["emotion weight"] + [f"{a} {k}" for k in TRADE_KEYS for a in ("v->m", "m->v")]
      rows = [
        [w + (" (the run's)" if float(w) == ret.get("emotion_weight") else "")]
        + [("{:.1f}" if "rank" in k else "{:.3f}").format(by[d][k]) for k in TRADE_KEYS for d in RETRIEVAL_DIRECTIONS]
        for w, by in trades.items()
      ]
      tables.append(("What the emotion weight trades (0: cosine only, 1: emotion only)", columns, rows))
  align = results.get("alignment")
  if align:
    probe_chance = chance.get("alignment", {}).get("modality_probe_accuracy", float("nan"))
    rows = [
      [k, f"{align[k]:.3f}", f"{probe_chance:.3f}" if k == "modality_probe_accuracy" else ""]
      for k in ALIGNMENT_KEYS
      if k in align
    ]
    gaps = ", ".join(f"{name} {gap:.3f}" for name, gap in align.get("per_emotion_centroid_gap", {}).items())
    rows.append(["per-emotion centroid gap", gaps, ""])
    tables.append((f"Modality alignment on {align['split']} (unit embeddings)", ["metric", "value", "chance"], rows))
  return tables


def format_table(results: Mapping[str, Any]) -> str:
  """A readable console/markdown table of a results dict, with chance beside every number."""
  lines = [result_title(results), ""]
  for heading, columns, rows in result_tables(results):
    lines += [heading, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
  return "\n".join(lines).rstrip("\n")


def train_threshold(evaluator: Evaluator, state: Any, data: RunData) -> float:
  """For cosine-scored models: the threshold with the best accuracy on the train split."""
  pred = evaluator.predict(state, data.train, keys=("score",))
  return choose_threshold(pred["score"], data.train.match)


def evaluate_for_selection(evaluator: Evaluator, state: Any, data: RunData, selection_metric: str) -> dict[str, float]:
  """The flat metrics of one evaluation during training (logged, and `selection_metric` selects on them), on the
  run's selection split and gallery (`RunData.selection`).

  A cosine-scored model's accuracy and F1 need a threshold fitted on train; it is only fitted when selection
  uses them, and otherwise those two are not computed per evaluation.

  Raises:
    KeyError: `selection_metric` is not one of the metrics computed.
  """
  probability = evaluator.family.score_is_probability
  threshold = None
  if not probability and selection_metric in THRESHOLD_METRICS:
    threshold = train_threshold(evaluator, state, data)
  flat, _ = evaluator.evaluate(
    state,
    alignment_probe=False,
    pair_split=data.selection,
    gallery=data.selection_gallery,
    threshold=threshold,
    threshold_free_only=not probability and threshold is None,
  )
  if selection_metric not in flat:
    raise KeyError(f"config.train.selection_metric={selection_metric!r} is not computed; choose one of {sorted(flat)}")
  return flat


def results(
  config: ml_collections.ConfigDict,
  evaluator: Evaluator,
  state: Any,
  data: RunData,
  *,
  checkpoint_step: int,
  selection: dict[str, Any] | None = None,
  emotion_weight: float | None = None,
  emotion_weight_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """The results dict (the schema of `results.json`) of one state on a run's evaluation splits.

  Args:
    config: the config whose `data.dataset` is evaluated on, and whose `seed` trained the state.
    evaluator: the family's evaluator.
    state: the train state to evaluate.
    data: the splits (`pairs` for classification, `gallery` for retrieval, `train` for a cosine threshold).
    checkpoint_step: the step of `state`.
    selection: training's model-selection record (`Selection.results_block`), if any.
    emotion_weight: the weight of emotion-aware ranking (`evaluation/affect.py`) for a model with an emotion
      head; None: chosen on the run's selection gallery where that is apart from the reported one, else 0.
    emotion_weight_fields: how a given `emotion_weight` was chosen (results.json's `emotion_weight_*` fields).
  """
  family = evaluator.family
  threshold = None if family.score_is_probability else train_threshold(evaluator, state, data)
  weight, weight_record = 0.0, {}
  if family.emotion_probabilities is not None and data.gallery is not None:
    weight, weight_record = _emotion_weight(evaluator, state, data, emotion_weight, emotion_weight_fields)
  _, structured = evaluator.evaluate(
    state, pair_split=data.pairs, gallery=data.gallery, threshold=threshold, emotion_weight=weight
  )
  outputs = structured.pop("gallery_outputs", None)
  out: dict[str, Any] = {
    "dataset": config.data.dataset,
    "model": family.model_name,
    "description": family.description,
    "seed": config.seed,
    "checkpoint_step": int(checkpoint_step),
    "classification": {
      "split": data.pairs_name,
      "num_pairs": len(data.pairs),
      "threshold": 0.5 if threshold is None else threshold,
      "threshold_chosen_on": "fixed" if threshold is None else "train",
      **structured["classification"],
    },
  }
  if "retrieval" in structured:
    out["retrieval"] = {"split": data.gallery_name, **structured["retrieval"]}
    if outputs is not None:  # what the run's weight trades against ranking by cosine only or by emotion only
      out["retrieval"].update(_chosen_for(weight_record, checkpoint_step))
      out["retrieval"]["by_emotion_weight"] = {
        affect.weight_key(w): {d: {k: r[d][k] for k in TRADE_KEYS} for d in RETRIEVAL_DIRECTIONS}
        for w in sorted({0.0, weight, 1.0})
        for r in [ranked_at(outputs, data.gallery.video_emotion, w)]
      }
    if getattr(data, "gallery_population", None):  # a seeded sample of the gallery (data.max_gallery_items)
      out["retrieval"]["sampled_from"] = int(data.gallery_population)
    out["alignment"] = {"split": data.gallery_name, **structured["alignment"]}
  out["chance"] = chance_levels(data.pairs, data.gallery if "retrieval" in structured else None)
  if selection is not None:
    out["selection"] = copy.deepcopy(selection)
  return out
