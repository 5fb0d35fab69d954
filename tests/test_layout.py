"""The package keeps the shape docs/architecture.md describes (read from the source, nothing imported):

- no import cycle, among modules or among the package's folders;
- an import inside a function only where it defers a heavy library from start-up, saying so on its line;
- the library (data/, models/, families/, runtime/, evaluation/, experiments/, extraction/) imports neither the
  training loop's entry points above it nor a command; the tools that evaluate never reach the training loop;
- at most 10 modules at the top of `emvgan_jax/`; every command a console script; no function over 80 lines;
- docs/architecture.md, the one package map, names every module; tests mirror the package's folders and never
  import each other.
"""

import ast
import configparser
import functools
import pathlib
import subprocess
import sys

import helpers
import pytest

import emvgan_jax

ROOT = helpers.REPO_ROOT
PACKAGES = ("emvgan_jax", "tfds_emomv", "benchmarks")
LIBRARY = ("data", "models", "families", "runtime", "evaluation", "experiments", "extraction")
COMMANDS = ("emvgan_jax.main", "emvgan_jax.tools")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


SOURCES = _sources()


@functools.cache
def _parse(path: pathlib.Path) -> tuple[list[str], ast.Module]:
  """A source file's lines and syntax tree, parsed once per test process."""
  source = path.read_text()
  return source.splitlines(), ast.parse(source)


@functools.cache
def _imports(path: pathlib.Path) -> list[tuple[str, bool, str]]:
  """(imported module, inside a function, the statement's first line) for every import of the project's own
  modules and of anything else (absolute names; `from a import b` yields `a.b` when that is a module)."""
  lines, tree = _parse(path)
  parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
  out = []
  for node in ast.walk(tree):
    if not isinstance(node, ast.Import | ast.ImportFrom):
      continue
    scope = parents.get(node)
    while scope is not None and not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
      scope = parents.get(scope)
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    else:
      base = node.module or ""
      if node.level:
        package = _module_name(path).split(".")
        package = package if path.name == "__init__.py" else package[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in SOURCES else base for a in node.names]
    out += [(name, scope is not None, lines[node.lineno - 1]) for name in names]
  return out


@functools.cache
def _graph(*, deferred: bool) -> dict[str, set[str]]:
  """Module -> the project's modules it imports (at the top only, or also inside functions), packages resolved to
  their `__init__`, and each module also importing its parent packages (as Python does). Importing a submodule runs
  only the top of its parent's `__init__`, not the imports its functions defer: in the deferred graph that edge
  goes to the node `parent:top`, which has the parent's top-level imports only."""

  def edges_of(name: str, path: pathlib.Path, with_deferred: bool) -> set[str]:
    edges = set()
    for imported, inside, _ in _imports(path):
      if inside and not with_deferred:
        continue
      parts = imported.split(".")
      for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
        prefix = ".".join(parts[:i])
        if prefix in SOURCES and prefix != name:
          edges.add(f"{prefix}:top" if deferred and i < len(parts) else prefix)
    return edges

  graph = {name: edges_of(name, path, deferred) for name, path in SOURCES.items()}
  if deferred:
    graph.update({f"{n}:top": edges_of(n, p, False) for n, p in SOURCES.items() if p.name == "__init__.py"})
  return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph`, or None."""
  state, stack = {}, []

  def visit(node: str) -> list[str] | None:
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def _is_package(name: str) -> bool:
  return SOURCES[name.removesuffix(":top")].name == "__init__.py"


def test_no_import_cycle_among_modules():
  # A package imports its parent (Python runs it first), not the other way round: those edges are not cycles.
  graph = {
    m: {e for e in edges if not (_is_package(e) and m.startswith(e.removesuffix(":top") + "."))}
    for m, edges in _graph(deferred=True).items()
  }
  assert _cycle(graph) is None


def test_no_import_cycle_among_the_packages_folders():
  def folder(m: str) -> str:
    m = m.removesuffix(":top")
    return ".".join(m.split(".")[:2]) if m.startswith("emvgan_jax.") and m.count(".") >= 2 else m

  graph = {}
  for module, edges in _graph(deferred=True).items():
    graph.setdefault(folder(module), set()).update(folder(e) for e in edges if folder(e) != folder(module))
  graph = {k: {e for e in v if not (e == "emvgan_jax" or k.startswith(e + "."))} for k, v in graph.items()}
  assert _cycle(graph) is None


def test_an_import_inside_a_function_defers_a_heavy_library_and_says_so():
  undeclared = [
    f"{SOURCES[m].relative_to(ROOT)}: {line.strip()}"
    for m in SOURCES
    for _, inside, line in _imports(SOURCES[m])
    if inside and "deferred:" not in line
  ]
  assert not undeclared


def test_the_library_imports_no_command_and_not_the_training_loop():
  graph = _graph(deferred=True)
  offending = []
  for module, edges in graph.items():
    if module.split(".")[1:2] and module.split(".")[1] in LIBRARY:
      above = {e for e in edges if e.startswith(COMMANDS)}
      if module.split(".")[1] != "experiments":  # the sweep and the tuning run the training loop
        above |= {e for e in edges if e == "emvgan_jax.train"}
      offending += [f"{module} -> {e}" for e in sorted(above)]
  assert not offending


def _closure(start: str, graph: dict[str, set[str]]) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    node = todo.pop()
    if node not in seen:
      seen.add(node)
      todo += graph.get(node, ())
  return seen


def test_evaluate_retrieve_and_index_never_reach_the_training_loop():
  graph = _graph(deferred=True)  # what they import at once or later, when they run
  for tool in ("emvgan_jax.tools.evaluate", "emvgan_jax.tools.retrieve", "emvgan_jax.tools.index", "emvgan_jax.api"):
    assert "emvgan_jax.train" not in _closure(tool, graph), tool


@pytest.mark.slow  # a fresh process
def test_importing_the_evaluation_tools_does_not_import_the_training_loop():
  code = "import emvgan_jax.tools.evaluate, emvgan_jax.tools.retrieve, sys; print('emvgan_jax.train' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


def test_the_top_of_the_package_holds_at_most_ten_modules():
  top = sorted(p.name for p in (ROOT / "emvgan_jax").glob("*.py"))
  assert len(top) <= 10, top


def test_every_command_is_a_console_script():
  config = configparser.ConfigParser()
  config.read(ROOT / "setup.cfg")
  scripts = dict(
    line.split("=", 1) for line in config["options.entry_points"]["console_scripts"].strip().splitlines() if line
  )
  targets = {v.strip() for v in scripts.values()}
  commands = {f"emvgan_jax.tools.{p.stem}:main" for p in (ROOT / "emvgan_jax" / "tools").glob("*.py")}
  commands -= {"emvgan_jax.tools.cli:main", "emvgan_jax.tools.__init__:main"}
  assert commands <= targets, commands - targets
  for name, target in scripts.items():
    module, _, function = target.strip().partition(":")
    assert function and module in SOURCES, (name, target)


def test_no_function_is_longer_than_80_lines():
  long = []
  for name, path in SOURCES.items():
    for node in ast.walk(_parse(path)[1]):
      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
        long.append(f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
  assert not long


def test_the_architecture_map_names_every_module():
  text = (ROOT / "docs" / "architecture.md").read_text()
  start = text.index("```")
  tree = text[start : text.index("```", start + 3)]
  missing = [
    str(path.relative_to(ROOT))
    for name, path in SOURCES.items()
    if path.name != "__init__.py" and "dummy_data" not in path.parts and path.name not in tree
  ]
  assert not missing
  assert "## Layout" not in (ROOT / "README.md").read_text()  # one map, not two


def test_tests_mirror_the_package_and_never_import_each_other():
  tests = ROOT / "tests"
  folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__"}
  package_folders = {p.name for p in (ROOT / "emvgan_jax").iterdir() if (p / "__init__.py").is_file()}
  assert folders <= package_folders | {"tfds_emomv", "benchmarks"}, folders
  for path in tests.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import | ast.ImportFrom):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        assert not any(n.split(".")[0].startswith(("test_", "conftest")) for n in names), path


def test_version_is_the_package_metadata_version():
  parts = emvgan_jax.__version__.split(".")
  assert len(parts) == 3 and all(p.isdigit() for p in parts)
  assert "version = attr: emvgan_jax.__version__" in (ROOT / "setup.cfg").read_text()
