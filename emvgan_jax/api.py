"""The Python API: a trained run as an object that embeds, scores and searches raw features.

    import emvgan_jax
    run = emvgan_jax.load_run("runs/emomv_c")          # the best checkpoint; checkpoint="latest" or a step
    z_video = run.embed_video(slowfast_rows)           # (N, 2304) raw SlowFast rows -> (N, 64) unit vectors
    z_music = run.embed_music(vggish_rows)             # (M, 128) raw VGGish rows
    p = run.match_probability(slowfast_rows, vggish_rows)  # (N,) for N (video, music) pairs (EMVGAN, classifiers)
    scores, indices = run.search(slowfast_rows[:1], vggish_gallery, k=5)  # video -> music, exact top-k
    run.search(q, g, k=5, emotion_weight=1.0)          # more the same mood; 0.0: more this very clip

Raw means as EmoMV's feature files hold them: the run's own standardisation (train-split statistics, saved in
the checkpoint) is applied inside, so the numbers are those of `evaluate` and `retrieve`, which go through the
same functions. Rows of the wrong width or with NaN / infinite values are refused (`ValueError` naming the row).
"""

from __future__ import annotations

import os

import numpy as np

from emvgan_jax import errors
from emvgan_jax.data.splits import Split
from emvgan_jax.evaluation import affect, protocol, retrieval
from emvgan_jax.evaluation import search as search_lib
from emvgan_jax.runtime import restore

MODALITIES = ("video", "music")


class TrainedRun:
  """A restored run (`runtime.restore.Run`) with the operations a user asks of it."""

  def __init__(self, run: restore.Run):
    self.run = run
    self._evaluator = None

  @property
  def description(self) -> str:
    return self.run.family.description

  @property
  def has_retrieval(self) -> bool:
    return self.run.family.has_retrieval

  def embed(self, modality: str, raw: np.ndarray, *, what: str = "the input", batch_size: int = 4096) -> np.ndarray:
    """(N, d) common-space vectors of raw `modality` feature rows (standardised here)."""
    if modality not in MODALITIES:
      raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    embed = self.run.family.embed_video if modality == "video" else self.run.family.embed_music
    return search_lib.embed_rows(embed, self.run.state, self._standardized(modality, raw, what), batch_size=batch_size)

  def _standardized(self, modality: str, raw: np.ndarray, what: str) -> np.ndarray:
    """Raw `modality` rows checked (width, finite values) and standardised with the run's train statistics."""
    if not self.has_retrieval:
      raise ValueError(f"{self.description} has no common embedding space (a classification model)")
    return self.run.standardizer.transform(modality, restore.check_features(self.run, modality, raw, what))

  def embed_video(self, raw: np.ndarray) -> np.ndarray:
    """(N, d) embeddings of raw (N, video width) SlowFast rows."""
    return self.embed("video", raw, what="the video input")

  def embed_music(self, raw: np.ndarray) -> np.ndarray:
    """(N, d) embeddings of raw (N, music width) VGGish rows."""
    return self.embed("music", raw, what="the music input")

  def match_probability(self, video: np.ndarray, music: np.ndarray) -> np.ndarray:
    """(N,) probability that row i's video and music convey the same emotion.

    Raises:
      ValueError: the model scores pairs by a cosine, not a probability (the EmoMV retrieval baselines: their
        threshold is chosen on train, see results.json), or the inputs do not fit.
    """
    if not self.run.family.score_is_probability:
      raise ValueError(
        f"{self.description} scores a pair by cosine similarity, not a probability; use embed_video / "
        "embed_music and their cosine, with the threshold in the run's results.json"
      )
    v = restore.check_features(self.run, "video", video, "the video input")
    m = restore.check_features(self.run, "music", music, "the music input")
    if len(v) != len(m):
      raise ValueError(f"{len(v)} video rows but {len(m)} music rows: pass one music row per video row")

    if self._evaluator is None:
      self._evaluator = protocol.Evaluator(self.run.family, self.run.mesh, batch_size=1024)
    n = len(v)
    split = self.run.standardizer.apply(
      Split(
        name=np.asarray([str(i) for i in range(n)], dtype=object),
        video=v,
        music=m,
        match=np.zeros(n, np.int32),  # labels only enter the loss, which is not returned
        video_emotion=np.zeros(n, np.int32),
        music_emotion=np.zeros(n, np.int32),
      )
    )
    return np.asarray(self._evaluator.predict(self.run.state, split)["score"], np.float64)

  @property
  def emotion_weight(self) -> float:
    """The emotion weight the run chose on its selection holdout (0: cosine ranking, or no emotion head)."""
    return retrieval.emotion_weight_of(self.run, None)

  def search(
    self,
    query: np.ndarray,
    gallery: np.ndarray,
    k: int = 10,
    *,
    direction: str = "video_to_music",
    emotion_weight: float | None = None,
  ) -> tuple[np.ndarray, np.ndarray]:
    """The `k` gallery rows most similar to each query: (scores, indices), each (Q, k), best first.

    Args:
      query: raw feature rows of the query modality (video for `video_to_music`).
      gallery: raw feature rows of the other modality.
      k: items per query (at most the gallery size).
      direction: 'video_to_music' or 'music_to_video'.
      emotion_weight: score = (1 - w) cosine + w emotion agreement (`evaluation/affect.py`): towards 1 for more
        of the same mood, towards 0 for more of this very clip; None: the run's own (`emotion_weight`).
    """
    if direction not in ("video_to_music", "music_to_video"):
      raise ValueError(f"direction must be 'video_to_music' or 'music_to_video', got {direction!r}")
    q_mod, g_mod = ("video", "music") if direction == "video_to_music" else ("music", "video")
    try:
      weight = retrieval.emotion_weight_of(self.run, emotion_weight)
    except errors.UsageError as e:  # the tools' wording names their flag; here it is an argument
      raise ValueError(str(e).replace("--emotion_weight", "emotion_weight")) from None
    queries = retrieval.embed_for_search(self.run, q_mod, self._standardized(q_mod, query, "the query"), weight=weight)
    stored = retrieval.embed_for_search(self.run, g_mod, self._standardized(g_mod, gallery, "the gallery"))
    scores, indices = search_lib.top_k_cosine(queries, stored, k)
    if self.run.family.emotion_probabilities is not None:  # the padded vectors' cosine back to the score
      scores = affect.score(scores, queries)
    return scores, indices


def load_run(workdir: str, checkpoint: str = "best") -> TrainedRun:
  """The trained run in `workdir` (its `best` checkpoint by default; 'latest' or a step number).

  Raises:
    runtime.checkpoint.CheckpointError: no such checkpoint, or a damaged one (the message says what to do).
    ValueError: the checkpoint does not fit the model its config describes.
  """
  return TrainedRun(restore.load_run(os.path.expanduser(workdir), checkpoint))
