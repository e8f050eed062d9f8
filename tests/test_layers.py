"""The layer rule: every module imports only from its own layer and the layers below it, with no cycles.

The layers are the picture in ``docs/architecture.md`` (the block between ``<!-- layers -->`` and
``<!-- /layers -->``, top layer first): the test reads the picture, checks that it names every module of
``src/mixlab`` and nothing else, and checks every import of every file against it. "Every import" means every
``import`` statement anywhere in a file (module level, inside functions, under ``TYPE_CHECKING``) and every
string that names a mixlab module (registry entries such as ``"mixlab.methods.mixup:Mixup"``, ``importlib``
targets), since those are imports too, only later.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PICTURE = ROOT / "docs" / "architecture.md"
PACKAGE = "mixlab"
MODULE_STRING = re.compile(r"^(mixlab(?:\.\w+)*)(?::\w+)?$")


def tree_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def read_layers() -> list[tuple[str, list[str]]]:
    """``[(layer, [module prefixes])]`` from the picture, bottom layer first."""
    text = PICTURE.read_text()
    match = re.search(r"<!-- layers -->(.*?)<!-- /layers -->", text, re.S)
    assert match, f"{PICTURE.name} has no <!-- layers --> ... <!-- /layers --> picture"
    layers = []
    for line in match.group(1).splitlines():
        line = re.sub(r"\(.*?\)", "", line)  # remarks in brackets
        names = re.findall(r"(?<![\w.`])(mixlab(?:\.\w+)*)", line)
        if names:
            layers.append((line.split()[0], names))
    assert layers, "the layer picture lists no modules"
    return layers[::-1]


def layer_of(module: str, layers) -> tuple[int, str]:
    """(index, entry) of the most specific picture entry that holds ``module``; the bare package name holds only
    the package's own ``__init__`` (the public names), not everything below it."""
    best = None
    for index, (_, entries) in enumerate(layers):
        for entry in entries:
            holds = module == entry or (entry != PACKAGE and module.startswith(entry + "."))
            if holds and (best is None or len(entry) > len(best[1])):
                best = (index, entry)
    return best


def resolve(source: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name of ``from <level dots><module> import ...`` in ``source`` (``""``: above the package, an
    import that cannot work)."""
    if not level:
        return module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    if level - 1 >= len(base):
        return ""
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports(source: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """``(imported module, line, is_statement)`` for every import statement and module-naming string."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, True) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(source, is_package, node.level, node.module)
            assert target, f"{path}:{node.lineno}: a relative import reaches above the {PACKAGE} package"
            for a in node.names:  # ``from pkg import submodule`` imports the submodule
                sub = f"{target}.{a.name}"
                out.append((sub if sub in known else target, node.lineno, True))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = MODULE_STRING.match(node.value)
            if m and m.group(1) in known and m.group(1) != PACKAGE:
                out.append((m.group(1), node.lineno, False))
    return [(t, line, stmt) for t, line, stmt in out if t == PACKAGE or t.startswith(PACKAGE + ".")]


def graph():
    modules = tree_modules()
    known = set(modules)
    return modules, {m: imports(m, p, known) for m, p in modules.items()}


def test_picture_names_every_module_and_nothing_else():
    layers = read_layers()
    modules = tree_modules()
    entries = [e for _, names in layers for e in names]
    assert len(entries) == len(set(entries)), f"a module is drawn twice: {sorted(entries)}"
    missing = sorted(m for m in modules if layer_of(m, layers) is None)
    assert not missing, f"modules not in the layer picture of {PICTURE.name}: {missing}"
    stale = sorted(e for e in entries if e not in modules)
    assert not stale, f"the layer picture names modules that do not exist: {stale}"


def test_imports_only_point_down():
    layers = read_layers()
    modules, edges = graph()
    wrong = []
    for source, targets in edges.items():
        here, _ = layer_of(source, layers)
        for target, line, _ in targets:
            if target == PACKAGE:
                wrong.append(f"{source}:{line} imports the package itself (import from the module that defines "
                             f"the name instead)")
                continue
            there, entry = layer_of(target, layers)
            if there > here:
                wrong.append(f"{modules[source].relative_to(ROOT)}:{line} ({layers[here][0]}) imports {target} "
                             f"({layers[there][0]})")
    assert not wrong, "imports that point up the layers:\n" + "\n".join(wrong)


def test_no_import_cycles():
    """No cycle among modules, counting function-level imports (registry strings are left out: a registry names
    the modules that register in it by design)."""
    _, edges = graph()
    succ = {m: sorted({t for t, _, stmt in ts if stmt and t in edges and t != m}) for m, ts in edges.items()}
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_check_catches_an_upward_import(tmp_path):
    """The parser sees a function-level import and a relative one (so the rule cannot pass by not looking)."""
    f = tmp_path / "m.py"
    f.write_text("def setup():\n    from ..train import make_trainer\n\nimport mixlab.cli\nX = 'mixlab.eval.common:EVALS'\n")
    top = tmp_path / "top.py"
    top.write_text("def plot():\n    from ..viz import save_figure\n")
    with pytest.raises(AssertionError, match="above the mixlab package"):
        imports("mixlab.metrics", top, set())
    known = {"mixlab.train", "mixlab.cli", "mixlab.eval.common", "mixlab.methods.m"}
    found = {(t, stmt) for t, _, stmt in imports("mixlab.methods.m", f, known)}
    assert found == {("mixlab.train", True), ("mixlab.cli", True), ("mixlab.eval.common", False)}
    layers = read_layers()
    assert layer_of("mixlab.train", layers)[0] > layer_of("mixlab.methods.mixup", layers)[0]
    assert layer_of("mixlab.methods", layers)[0] > layer_of("mixlab.seeding", layers)[0]
