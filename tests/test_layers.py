"""The layer order of docs/architecture.md holds for every import in src/medtune: no upward import, no cycle,
no module the table does not place. Function-level imports count; the table is read from the doc itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def read_layers(doc: Path) -> dict[str, int]:
    """`medtune.<name>` -> layer number, from the rows of the doc's layer table ("| 3 | `generate` | ...")."""
    layers = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            for name in re.findall(r"`([\w.]+)`", m.group(2)):
                layers[f"medtune.{name}"] = int(m.group(1))
    return layers


def module_names(src: Path) -> dict[str, Path]:
    out = {}
    for f in (src / "medtune").rglob("*.py"):
        rel = f.relative_to(src).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return out


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The medtune modules `module` imports, at any depth of its code (absolute and relative imports)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != module and t != "medtune":
                found.add(t)
    return found


def layer_of(module: str, layers: dict[str, int]) -> int | None:
    while module:
        if module in layers:
            return layers[module]
        module = module.rpartition(".")[0]
    return None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def violations(src: Path, layers: dict[str, int]) -> list[str]:
    modules = module_names(src)
    problems = [f"{m}: not placed in any layer of docs/architecture.md" for m in sorted(modules)
                if m != "medtune" and layer_of(m, layers) is None]
    edges = {}
    for m, path in modules.items():
        # a package's __init__ importing its own children (its entry point) is the package itself speaking
        edges[m] = {t for t in imports_of(m, path, modules)
                    if not (path.name == "__init__.py" and t.startswith(m + "."))}
        here = layer_of(m, layers)
        for t in sorted(edges[m]):
            there = layer_of(t, layers)
            if here is not None and there is not None and there > here:
                problems.append(f"{m} (layer {here}) imports {t} (layer {there}): an upward import")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(edges)]
    return problems


def test_layer_table_places_the_stage_packages_in_pipeline_order():
    layers = read_layers(ARCHITECTURE)
    order = [layers[f"medtune.{p}"] for p in ("errors", "data", "generate", "train", "align", "evaluate", "report",
                                              "cli")]
    assert order == sorted(order) and len(set(order)) == len(order)


def test_src_has_no_upward_import_and_no_cycle():
    assert violations(ROOT / "src", read_layers(ARCHITECTURE)) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        f = tmp_path / "src" / "medtune" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return tmp_path / "src"


LAYERS = {"medtune.errors": 1, "medtune.config": 1, "medtune.data": 2, "medtune.train": 4}


def test_a_planted_function_level_upward_import_is_found(tmp_path):
    src = _tree(tmp_path, {"__init__.py": "", "errors.py": "", "config.py": "from medtune.errors import X\n",
                           "data/__init__.py": "", "train/__init__.py": "",
                           "data/readers.py": "def f():\n    from medtune.train import stage\n",
                           "train/stage.py": "from medtune.data.readers import f\n"})
    assert violations(src, LAYERS) == [
        "medtune.data.readers (layer 2) imports medtune.train.stage (layer 4): an upward import",
        "import cycle: medtune.data.readers -> medtune.train.stage"]


def test_a_planted_cycle_within_a_layer_and_an_unplaced_module_are_found(tmp_path):
    src = _tree(tmp_path, {"__init__.py": "", "errors.py": "from . import config\n",
                           "config.py": "import medtune.errors\n", "stray.py": ""})
    assert violations(src, LAYERS) == ["medtune.stray: not placed in any layer of docs/architecture.md",
                                       "import cycle: medtune.config -> medtune.errors"]
