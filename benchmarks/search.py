"""Exact top-k cosine search at gallery scale: this project's index against numpy and faiss, interleaved.

  python -m benchmarks.search --sizes=100000,1000000 --queries=1024 --k=10 --dim=64

For each gallery size (random unit vectors, seeded) every side answers the same 1,024 queries, in rounds: one
round runs each side once, in turn, and the figure of a side is the median of its rounds (min and max beside),
so that the machine's load moves every side alike. Ratios are the median of the per-round ratios. Sides:

  index        `search.GalleryIndex`: gallery normalised, transposed and sharded once; one jitted search
  index_bf16   the same index with bfloat16 scores and its exact float32 re-rank (`scores='bfloat16'`)
  chunked      `search.top_k_cosine`: the chunked search that `retrieve` used before the index
  numpy        a float32 BLAS matmul per 65,536-row chunk, `argpartition`, merged (what one would write by hand)
  faiss        `faiss.IndexFlatIP` (exact inner product; `pip install faiss-cpu`), skipped if not installed, with
               `faiss.cvar.distance_compute_blas_threshold` set to --faiss_blas_threshold (20, faiss 1.12's default
               and what a faiss user tuning for speed sets: 1.15's default of 128,000 keeps 1,024 queries off BLAS)

--floors: also time what the index's matmul alone costs, interleaved: XLA's jitted product of the 1,024 queries by
each of the index's (D x chunk) gallery chunks (as one device holds them; nothing else: no mask, no maxima, no top
k), against numpy's BLAS sgemm of the same operands into one buffer. A search cannot be faster than its matmul;
the two floors say how much of the index's time is XLA:CPU's matmul, and how much of faiss's is BLAS.

Before timing, every side's ids are compared with an exact float64 ranking of the first --check_queries queries
(ties broken by row, lowest first); a side that disagrees is reported, not timed. Building each side's index is
timed once and printed apart. The CPU model and the load at the start are printed with the figures.
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import flags

import benchmarks
from emvgan_jax.tools import cli

_SIZES = flags.DEFINE_list("sizes", ["100000", "1000000"], "Gallery sizes.")
_QUERIES = flags.DEFINE_integer("queries", 1024, "Queries per search.", lower_bound=1)
_K = flags.DEFINE_integer("k", 10, "Neighbours per query.", lower_bound=1)
_DIM = flags.DEFINE_integer("dim", 64, "Embedding width.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds per size.", lower_bound=1)
_CHECK = flags.DEFINE_integer("check_queries", 64, "Queries checked against float64.", lower_bound=1)
_SIDES = flags.DEFINE_list("sides", ["index", "chunked", "numpy", "faiss"], "Which sides to run.")
_JSON = flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")
_FLOORS = flags.DEFINE_bool("floors", False, "Also time the matmul alone: XLA's (the index's) and BLAS's.")
_FAISS_BLAS = flags.DEFINE_integer(
  "faiss_blas_threshold",
  20,
  "faiss.cvar.distance_compute_blas_threshold for the faiss side: with at least this many queries faiss scores by "
  "BLAS matmul (1.15's default, 128000, is effectively never for a search of 1,024 queries).",
  lower_bound=0,
)

NUMPY_CHUNK = 65536


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_top_k(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
  """Ids of the top k by a float32 matmul per chunk and argpartition (gallery and queries already unit-norm)."""
  best_s = np.full((len(queries), 0), -np.inf, np.float32)
  best_i = np.zeros((len(queries), 0), np.int64)
  for start in range(0, len(gallery), NUMPY_CHUNK):
    sims = queries @ gallery[start : start + NUMPY_CHUNK].T
    kk = min(k, sims.shape[1])
    part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
    i = np.concatenate([best_i, part + start], axis=1)
    order = np.lexsort((i, -s), axis=1)[:, :k]  # by score, then by row
    best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
  return best_i


def exact_ids(queries: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 1 << 20) -> np.ndarray:
  """The float64 ranking's top k ids, ties by lowest row (a million float64 rows at a time)."""
  q64 = _unit(queries.astype(np.float64))
  best_s = np.full((len(q64), 0), -np.inf)
  best_i = np.zeros((len(q64), 0), np.int64)
  for start in range(0, len(gallery), chunk):
    sims = q64 @ _unit(gallery[start : start + chunk].astype(np.float64)).T
    s = np.concatenate([best_s, sims], axis=1)
    i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + sims.shape[1]), sims.shape)], axis=1)
    order = np.lexsort((i, -s), axis=1)[:, :k]
    best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
  return best_i


def _sides(gallery: np.ndarray, k: int) -> dict:
  """name -> (build seconds, search(queries) -> ids)."""
  from emvgan_jax.evaluation import search  # deferred: JAX loads once the flags are parsed

  sides = {}
  wanted = set(_SIDES.value)
  if "index" in wanted:
    t0 = time.perf_counter()
    index = search.GalleryIndex(gallery)
    sides["index"] = (time.perf_counter() - t0, lambda q: index.search(q, k)[1])
  if "index_bf16" in wanted:
    t0 = time.perf_counter()
    bf16 = search.GalleryIndex(gallery, scores="bfloat16")
    sides["index_bf16"] = (time.perf_counter() - t0, lambda q: bf16.search(q, k)[1])
  if "chunked" in wanted:
    sides["chunked"] = (0.0, lambda q: search.top_k_cosine(q, gallery, k)[1])
  if "numpy" in wanted:
    t0 = time.perf_counter()
    unit = _unit(gallery).astype(np.float32)
    sides["numpy"] = (time.perf_counter() - t0, lambda q: numpy_top_k(_unit(q).astype(np.float32), unit, k))
  if "faiss" in wanted:
    try:
      import faiss  # deferred: faiss, the [bench] extra, only for its side
    except ImportError:
      print("  faiss: not installed (pip install faiss-cpu); skipped")
    else:
      faiss.cvar.distance_compute_blas_threshold = _FAISS_BLAS.value  # as a faiss user tuning for speed would
      print(f"  faiss {faiss.__version__}: BLAS threshold {faiss.cvar.distance_compute_blas_threshold}")
      t0 = time.perf_counter()
      flat = faiss.IndexFlatIP(gallery.shape[1])
      flat.add(_unit(gallery).astype(np.float32))
      sides["faiss"] = (time.perf_counter() - t0, lambda q: flat.search(_unit(q).astype(np.float32), k)[1])
  return sides


def matmul_floors(gallery: np.ndarray, queries: np.ndarray) -> dict:
  """Seconds of the index's matmul alone, XLA's and BLAS's, median [min, max] of --rounds interleaved rounds."""
  import jax  # deferred: JAX loads once the flags are parsed
  import jax.numpy as jnp  # deferred: as above

  from emvgan_jax.evaluation import search  # deferred: as above

  chunk = search.equal_chunks(len(gallery), search.PASS_CHUNK)  # the float32 index's chunks on one device
  count = -(-len(gallery) // chunk)
  padded = np.zeros((count * chunk, gallery.shape[1]), np.float32)
  padded[: len(gallery)] = _unit(gallery)
  chunks_t = np.ascontiguousarray(padded.reshape(count, chunk, -1).transpose(0, 2, 1))  # (chunks, D, chunk)
  q = _unit(queries).astype(np.float32)

  @jax.jit
  def xla(qs: jax.Array, cs: jax.Array) -> jax.Array:
    def one(carry: jax.Array, c: jax.Array) -> tuple[jax.Array, None]:
      s = jnp.matmul(qs, c, precision=jax.lax.Precision.HIGHEST)
      return carry + s[:, :1].sum(), None  # one value of each product kept, so that none is optimised away

    return jax.lax.scan(one, jnp.float32(0), cs)[0]

  out = np.empty((len(q), chunk), np.float32)

  def blas(qs: np.ndarray, cs: np.ndarray) -> None:
    for c in cs:
      np.matmul(qs, c, out=out)

  qd, cd = jnp.asarray(q), jnp.asarray(chunks_t)
  jax.block_until_ready(xla(qd, cd))
  times = {"xla": [], "blas": []}
  for _ in range(_ROUNDS.value):
    t0 = time.perf_counter()
    jax.block_until_ready(xla(qd, cd))
    t1 = time.perf_counter()
    blas(q, chunks_t)
    times["xla"].append(t1 - t0)
    times["blas"].append(time.perf_counter() - t1)
  ratio = np.asarray(times["xla"]) / np.asarray(times["blas"])
  flops = 2.0 * len(q) * gallery.shape[1] * count * chunk
  result = {"chunk": chunk, "chunks": count, "xla_over_blas": [float(np.median(ratio)), ratio.min(), ratio.max()]}
  for name, t in times.items():
    result[f"{name}_s"] = [float(np.median(t)), min(t), max(t)]
    result[f"{name}_gflops"] = flops / float(np.median(t)) / 1e9
  return result


def one_size(size: int) -> dict:
  rng = np.random.default_rng(size)
  gallery = rng.normal(size=(size, _DIM.value)).astype(np.float32)
  queries = rng.normal(size=(_QUERIES.value, _DIM.value)).astype(np.float32)
  k = _K.value
  sides = _sides(gallery, k)
  want = exact_ids(queries[: _CHECK.value], gallery, k)
  result = {"size": size, "queries": len(queries), "k": k, "dim": _DIM.value, "sides": {}}
  timed = {}
  for name, (build_s, fn) in sides.items():
    fn(queries)  # compile for the timed shape, and warm up
    same = bool(np.array_equal(np.asarray(fn(queries[: _CHECK.value])), want))
    result["sides"][name] = {"build_s": build_s, "ids_equal_float64": same}
    if same:
      timed[name] = fn
    else:
      print(f"  {name}: ids differ from the float64 ranking; not timed")
  times = {name: [] for name in timed}
  for _ in range(_ROUNDS.value):
    for name, fn in timed.items():
      t0 = time.perf_counter()
      fn(queries)
      times[name].append(time.perf_counter() - t0)
  for name, t in times.items():
    med = float(np.median(t))
    entry = result["sides"][name]
    entry.update(median_s=med, min_s=min(t), max_s=max(t), qps=len(queries) / med)
    for other in times:
      if other != name:
        ratios = np.asarray(times[other]) / np.asarray(t)
        entry[f"speedup_vs_{other}"] = [float(np.median(ratios)), float(ratios.min()), float(ratios.max())]
  if _FLOORS.value:
    result["floors"] = matmul_floors(gallery, queries)
  return result


def _print(r: dict) -> None:
  print(f"gallery {r['size']:,} x {r['dim']}, {r['queries']} queries, top {r['k']}:")
  for name, e in r["sides"].items():
    if "median_s" not in e:
      continue
    speedups = [(o[len("speedup_vs_") :], v) for o, v in e.items() if o.startswith("speedup_vs_")]
    vs = "  ".join(f"{v[0]:.2f}x {o} [{v[1]:.2f}, {v[2]:.2f}]" for o, v in speedups)
    print(
      f"  {name:8s} {e['qps']:>10,.0f} queries/s  {1e3 * e['median_s']:8.1f} ms [{1e3 * e['min_s']:.1f}, "
      f"{1e3 * e['max_s']:.1f}]  build {e['build_s']:.2f} s  ids = float64: {e['ids_equal_float64']}  {vs}"
    )
  if "floors" in r:
    f = r["floors"]
    for name, what in (("xla", "XLA (the index's)"), ("blas", "numpy BLAS sgemm")):
      t = f[f"{name}_s"]
      print(
        f"  matmul alone, {what}: {1e3 * t[0]:.1f} ms [{1e3 * t[1]:.1f}, {1e3 * t[2]:.1f}], "
        f"{f[f'{name}_gflops']:.0f} GFLOP/s ({f['chunks']} chunks of {f['chunk']:,})"
      )
    x = f["xla_over_blas"]
    print(f"  matmul alone, XLA / BLAS time: {x[0]:.2f}x [{x[1]:.2f}, {x[2]:.2f}]")


def main(argv: list[str]) -> None:
  del argv

  def body() -> None:
    benchmarks.positive_ints("sizes", _SIZES.value)
    print(benchmarks.machine())
    results = []
    for s in _SIZES.value:
      results.append(one_size(int(s)))
      _print(results[-1])
    if _JSON.value:
      with open(_JSON.value, "w", encoding="utf-8") as f:
        json.dump({"machine": benchmarks.machine(), "results": results}, f, indent=1)

  body()


if __name__ == "__main__":
  from emvgan_jax.tools import cli  # pylint: disable=g-import-not-at-top

  cli.run_app(main, __doc__)
