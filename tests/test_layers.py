"""The layers of ARCHITECTURE.md, checked on the source: every import (function-level ones
included) points down the layer order or within a layer, no module is part of an import
cycle, and nothing in explorer/ imports streamlit."""
import ast
from pathlib import Path

from conftest import ROOT

# lowest first; a module belongs to the layer of the longest prefix it matches. ui/ has an order of its
# own: the package (a docstring), infrastructure (settings, text store, cache, session values), the
# shared computations, then the panels pages place.
UI_INFRASTRUCTURE = ("ui.hosting", "ui.messages", "ui.settings", "ui.texts", "ui.saved", "ui.downloads", "ui.cache",
                     "ui.state")
UI_COMPUTATIONS = ("ui.compute", "ui.refine", "ui.document")
UI_PANELS = ("ui.charts", "ui.maps", "ui.inspector", "ui.fidelity", "ui.forms", "ui.remedies", "ui.share", "ui.sidebar",
             "ui.dilution", "ui.corpus", "ui.inside", "ui.needle", "ui.corpus_needle", "ui.opening")
LAYERS = [("explorer.core",), ("explorer.mechanisms",), ("explorer.analysis",), ("explorer.figures",), ("explorer",),
          ("ui",), UI_INFRASTRUCTURE, UI_COMPUTATIONS, UI_PANELS, ("views",), ("app",)]


def project_modules() -> dict[str, Path]:
    found = {}
    for path in [ROOT / "app.py", *ROOT.glob("explorer/**/*.py"), *ROOT.glob("ui/*.py"), *ROOT.glob("views/*.py")]:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path, name: str) -> set[str]:
    """Every module named by an import statement anywhere in the file, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    edges = {}
    for name, path in mods.items():
        targets = set()
        for target in imports(path, name):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def layer(module: str) -> int:
    matches = [(p, i) for i, group in enumerate(LAYERS) for p in group if module == p or module.startswith(p + ".")]
    return max(matches, key=lambda m: len(m[0]))[1] if matches else -1


def test_every_module_belongs_to_a_layer():
    assert all(layer(m) >= 0 for m in project_modules())
    assert layer("explorer.core.stats") == 0 and layer("explorer.bench") == 4 and layer("views.lsh") == 9
    ui = {m for m in project_modules() if m.startswith("ui.")}
    placed = set(UI_INFRASTRUCTURE + UI_COMPUTATIONS + UI_PANELS)
    assert ui == placed, f"ui modules without a place in ui's order: {sorted(ui - placed)}; gone: {sorted(placed - ui)}"


def test_nothing_imports_upward():
    upward = sorted((a, b) for a, targets in graph().items() for b in targets if layer(b) > layer(a))
    assert not upward, f"imports that run up the layers: {upward}"


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


def test_the_library_never_imports_streamlit():
    mods = project_modules()
    offenders = [name for name, path in mods.items() if name.startswith("explorer")
                 and any(t == "streamlit" or t.startswith("streamlit.") for t in imports(path, name))]
    assert not offenders


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    """The parser itself: an import inside a function and a relative one are both found."""
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from ui import state\n    from . import sibling\n", encoding="utf-8")
    found = imports(source, "explorer.core.mod")
    assert "ui.state" in found and "explorer.core.sibling" in found


def test_pages_name_their_computations_and_read_typed_results():
    """No page spells a cache key (they call named computations) or reads a structure by string."""
    for path in ROOT.glob("views/*.py"):
        assert "cached(" not in path.read_text(encoding="utf-8"), path.name
    for path in [*ROOT.glob("explorer/**/*.py"), *ROOT.glob("ui/*.py"), *ROOT.glob("views/*.py")]:
        assert "structure[" not in path.read_text(encoding="utf-8"), path.name
