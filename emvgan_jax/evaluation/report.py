"""A run's report: one self-contained HTML page, `report.html`, beside the results it shows.

What a researcher opens to see a run: the results tables with chance beside every number (the same tables as
`results.md`, from `protocol.result_tables`), the alignment block, the figures (training curves,
precision-recall, the PCA map of the common space, the confusion matrix; embedded as PNG, or as SVG after
`emvgan-evaluate --svg`, so the page is one file that can be mailed or archived), and what the model retrieves:
for a fixed sample of gallery queries in each direction, the top 5 items with their emotions, the query's own
counterpart and same-emotion hits marked.
EmoMV-B and -C name their segments by YouTube id: those names link to the video.

Written by `evaluate` (into its output folder) and at the end of training (`W/report.html`), from what they
already computed: no model call happens here.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emvgan_jax import atomic
from emvgan_jax.data.emomv import EMOTIONS
from emvgan_jax.evaluation import affect, protocol

REPORT_NAME = "report.html"
FIGURES = (  # (plot name, caption), in page order
  ("training_curves", "Training: loss terms, discriminator accuracy and the evaluations on the selection split."),
  ("precision_recall", "Precision-recall on the gallery (label relevance), with the chance line."),
  ("embedding_pca", "The common space: gallery music (circles) and video (triangles), one PCA, coloured by emotion."),
  ("confusion_matrix", "Pair classification at the chosen threshold."),
)
_DIRECTIONS = (("video_to_music", "video", "music"), ("music_to_video", "music", "video"))
_YOUTUBE_ID = re.compile(r"^([A-Za-z0-9_-]{11})(?:_\d+)?$")
_LINKED_SETS = ("emomv/b", "emomv/c")  # segments named <YouTube id>[_<segment>]; EmoMV-A's are MVED file names


def youtube_url(name: str, dataset: str) -> str | None:
  """The YouTube page of a segment of EmoMV-B or -C (`7ZIKT6L83ak`, `yA9WhYnsD_4_06`); None elsewhere."""
  match = _YOUTUBE_ID.match(name)
  if dataset not in _LINKED_SETS or not match:
    return None
  return f"https://www.youtube.com/watch?v={match.group(1)}"


def retrieved_examples(
  embeddings: Mapping[str, np.ndarray],
  *,
  k: int = 5,
  num_queries: int = 8,
  seed: int = 0,
  emotion_weight: float = 0.0,
) -> dict[str, list[dict[str, Any]]]:
  """For `num_queries` gallery items (a fixed random sample), the top `k` of the other modality, per direction.

  Args:
    embeddings: `gallery_embeddings`' dict: `name`, `emotion` (N,), `video` and `music` (N, D), and for a model
      with an emotion head `video_emotion_probs` and `music_emotion_probs`.
    emotion_weight: ranked by `affect.similarity` at this weight, as the run's retrieval metrics are (0: cosine).
    k: items per query.
    num_queries: queries per direction (all items when the gallery is smaller).
    seed: the sample's seed.

  Returns:
    {direction: [{query, emotion, items: [{name, emotion, score, same_emotion, counterpart}]}]}.
  """
  names, emotion = np.asarray(embeddings["name"]).astype(str), np.asarray(embeddings["emotion"])
  n = len(names)
  queries = np.sort(np.random.default_rng(seed).choice(n, min(num_queries, n), replace=False))
  out = {}
  probs = [embeddings.get(f"{m}_emotion_probs") for m in ("video", "music")]
  weight = emotion_weight if probs[0] is not None else 0.0  # no emotion head: cosine
  video_to_music = affect.similarity(embeddings["video"], embeddings["music"], *probs, weight)
  for direction, _, _ in _DIRECTIONS:
    sim = video_to_music if direction == "video_to_music" else video_to_music.T  # as the retrieval metrics rank
    rows = []
    for q in queries:
      top = np.argsort(-sim[q], kind="stable")[: min(k, n)]
      items = [
        {
          "name": names[i],
          "emotion": int(emotion[i]),
          "score": float(sim[q, i]),
          "same_emotion": bool(emotion[i] == emotion[q]),
          "counterpart": bool(i == q),
        }
        for i in top
      ]
      rows.append({"query": names[q], "emotion": int(emotion[q]), "items": items})
    out[direction] = rows
  return out


def _esc(text: object) -> str:
  return html.escape(str(text), quote=True)


def _name_cell(name: str, dataset: str) -> str:
  url = youtube_url(name, dataset)
  return f'<a href="{_esc(url)}">{_esc(name)}</a>' if url else _esc(name)


def _table(heading: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
  body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
  return f"<h3>{_esc(heading)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: str, caption: str) -> str:
  from emvgan_jax.evaluation import plots  # deferred: matplotlib, only when plotting

  svg = plots.svg_path(path)
  source, mime = (svg, "image/svg+xml") if os.path.isfile(svg) else (path, "image/png")
  with open(source, "rb") as f:
    data = base64.b64encode(f.read()).decode("ascii")
  alt = _esc(caption)
  return f'<figure><img src="data:{mime};base64,{data}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


def _examples_section(examples: Mapping[str, Sequence[Mapping[str, Any]]], dataset: str) -> str:
  parts = [
    "<h2>What the model retrieves</h2>",
    "<p>A fixed sample of gallery queries; the top items of the other modality, best first. "
    '<span class="same">Same emotion</span> as the query; <b>bold</b>: the query\'s own counterpart.</p>',
  ]
  for direction, query_modality, item_modality in _DIRECTIONS:
    rows = examples.get(direction)
    if not rows:
      continue
    k = len(rows[0]["items"])
    head = f"<th>{query_modality} query</th>" + "".join(f"<th>{item_modality} {r + 1}</th>" for r in range(k))
    body = []
    for row in rows:
      cells = [f"<td>{_name_cell(row['query'], dataset)}<br><small>{_esc(EMOTIONS[row['emotion']])}</small></td>"]
      for item in row["items"]:
        name = _name_cell(item["name"], dataset)
        name = f"<b>{name}</b>" if item["counterpart"] else name
        label = f"{_esc(EMOTIONS[item['emotion']])}, {item['score']:.2f}"
        css = ' class="same"' if item["same_emotion"] else ""
        cells.append(f"<td{css}>{name}<br><small>{label}</small></td>")
      body.append("<tr>" + "".join(cells) + "</tr>")
    parts.append(f"<h3>{query_modality} &rarr; {item_modality}</h3><table><thead><tr>{head}</tr></thead>")
    parts.append(f"<tbody>{''.join(body)}</tbody></table>")
  return "".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.same { background: #e6f4e6; }
span.same { background: #e6f4e6; padding: 0 0.3em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; }
figcaption, .note { color: #555; font-size: 0.9em; }
"""


def write_report(
  out_dir: str,
  results: Mapping[str, Any],
  *,
  plots: Mapping[str, str],
  examples: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
  note: str = "",
) -> str:
  """Writes `out_dir/report.html` (atomically) and returns its path.

  Args:
    out_dir: the folder of `results.json`.
    results: the results dict.
    plots: {plot name: PNG path} as `plots.write_training_plots` returns (the SVG beside a PNG is embedded
      where there is one, else the PNG).
    examples: `retrieved_examples` of the gallery (None: a model without a retrieval space).
    note: a line on where the numbers come from (checkpoint, training set, standardisation).
  """
  dataset = str(results.get("dataset", ""))
  title = protocol.result_title(results)
  parts = [f"<h1>{_esc(title)}</h1>"]
  if note:
    parts.append(f'<p class="note">{_esc(note)}</p>')
  parts.append("<h2>Results</h2>")
  parts += [_table(heading, columns, rows) for heading, columns, rows in protocol.result_tables(results)]
  figures = [_figure(plots[name], caption) for name, caption in FIGURES if name in plots]
  if figures:
    parts += ["<h2>Figures</h2>", *figures]
  if examples:
    parts.append(_examples_section(examples, dataset))
  page = (
    f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
    f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
  )
  path = os.path.join(out_dir, REPORT_NAME)
  atomic.write_text(path, page)
  return path
