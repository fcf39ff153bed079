"""The import structure, read statically from the source (module-level and function-local imports alike):
the model layer never imports the training package, and the parts of ``niaf_train`` import each other without
a cycle, with the data formats at the bottom."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "train"  # installed as niaf_train


def _unit(parts: tuple[str, ...]) -> str:
    """The node a module of niaf_train belongs to: its sub-package (data, training, ...) or, for a top-level
    module, the module itself (tiny, console_logging, demo)."""
    if len(parts) > 1 and (TRAIN / parts[0]).is_dir():
        return parts[0]
    return parts[0] if parts[0] != "__init__" else "niaf_train"


def _imported_units(path: Path) -> set[str]:
    rel = path.relative_to(TRAIN).with_suffix("")
    package = list(rel.parts[:-1])  # the package the module sits in (relative imports start there)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package[: len(package) - (node.level - 1)]
            names = [base + node.module.split(".")] if node.module else [base + [a.name] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("niaf_train"):
            names = [node.module.split(".")[1:] or ["__init__"]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1:] or ["__init__"] for a in node.names if a.name.startswith("niaf_train")]
        else:
            continue
        found.update(_unit(tuple(n)) for n in names if n)
    return found


def import_graph() -> dict[str, set[str]]:
    """Unit → the other units of niaf_train it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(TRAIN.rglob("*.py")):
        unit = _unit(path.relative_to(TRAIN).with_suffix("").parts)
        graph.setdefault(unit, set()).update(u for u in _imported_units(path) if u != unit)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_niaf_train_has_no_import_cycle_and_data_sits_at_the_bottom():
    graph = import_graph()
    assert {"data", "training", "evaluation", "baselines", "tiny", "demo"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle in niaf_train: {' -> '.join(find_cycle(graph))}"
    assert not graph["data"] & {"training", "evaluation", "baselines", "demo"}, graph["data"]
    assert "demo" not in set().union(*(v for k, v in graph.items() if k != "demo"))  # nothing imports the main job


def test_the_model_layer_never_imports_the_training_package():
    for package in ("modeling_niaf", "configuration_niaf"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                assert not any(n.split(".")[0] == "niaf_train" for n in names), f"{path} imports {names}"


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the bare string statements of ``tree`` (module, class, function and attribute docstrings)."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def test_the_model_layer_names_the_training_package_only_in_docstrings():
    """No code of the model layer names niaf_train, in an import or in a string it uses (an error message naming
    a training-package loader, say): what a checkpoint needs from elsewhere comes from the checkpoint's config."""
    assert _docstring_nodes(ast.parse('"""doc"""\nx = "niaf_train.a"\n"""attribute doc"""\n')) != set()
    for package in ("modeling_niaf", "configuration_niaf"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docs = _docstring_nodes(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                    assert "niaf_train" not in node.value, f"{path}:{node.lineno} names niaf_train: {node.value!r}"


def uncommented_local_imports(source: str) -> list[int]:
    """Line numbers of the imports inside a function of ``source`` that carry no comment saying why they are
    local (on the import's first or last line, or on the line above it)."""
    lines = source.splitlines()
    found: set[int] = set()
    for func in ast.walk(ast.parse(source)):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                    if not ("#" in lines[node.lineno - 1] or "#" in lines[node.end_lineno - 1]
                            or above.startswith("#")):
                        found.add(node.lineno)
    return sorted(found)


def test_uncommented_local_imports_finds_one_and_only_one():
    source = ("import os\n\n\ndef f():\n    import torch  # heavy: torch\n    # optional dependency: av\n"
              "    import av\n    from .sibling import g\n    return g\n")
    assert uncommented_local_imports(source) == [8]


def test_function_local_imports_of_niaf_train_say_why():
    """An import inside a function is for a heavy or optional dependency, or breaks what would be a heavy
    start-up; a comment on its line or the line above says which. Imports of light modules go at the top."""
    missing = [f"{path.relative_to(ROOT)}:{line}" for path in sorted(TRAIN.rglob("*.py"))
               for line in uncommented_local_imports(path.read_text(encoding="utf-8"))]
    assert not missing, f"function-local imports without a comment saying why: {', '.join(missing)}"
