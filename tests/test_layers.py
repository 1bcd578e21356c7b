"""The package's layers import one way (docs/architecture.md): a module imports only its own layer and layers
below it, at module level or inside functions, and no module reaches itself through imports (within a layer too).
A new upward import or a cycle fails here, not in a review."""
import ast
from pathlib import Path

import innovwin

ROOT = Path(innovwin.__file__).parent
KERNELS = ROOT.parent / "kernels"  # installed as innovwin.kernels
# Lowest first. ``config`` sits above tasks and objectives: it resolves task specs and checks architecture
# names against the registry. ``train`` sits above ``analysis``: it summarizes a run with the clocks.
LAYERS = [
    {"naming", "tomlfile", "_native_loader", "runtime", "_native", "fieldspec"},
    {"bits"},
    {"tasks"},
    {"search", "kernels"},
    {"models"},
    {"objectives"},
    {"config"},
    {"evaluation"},
    {"store"},
    {"analysis"},
    {"train"},
    {"sweeps"},
    {"report"},
    {"cli", "__main__"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def imported_packages(path: Path) -> set[str]:
    """First component below ``innovwin`` of every innovwin import in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "innovwin":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("innovwin.")}
    return found


def test_every_module_belongs_to_a_layer():
    top = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert top <= set(LEVEL), f"modules without a layer: {sorted(top - set(LEVEL))}"


def test_imports_go_down_the_layers():
    upward = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).parts
        own = rel[0] if len(rel) > 1 else path.stem
        if own == "__init__":
            continue
        for target in imported_packages(path):
            if target in LEVEL and LEVEL[target] > LEVEL[own]:
                upward.append(f"{'/'.join(rel)} imports innovwin.{target}")
    assert not upward, "imports that go up a layer:\n" + "\n".join(sorted(upward))


# --- cycles ------------------------------------------------------------------------------
def module_files() -> dict[str, Path]:
    """Every innovwin module's dotted name -> its file (a package is its __init__.py; the C++ extension is one)."""
    files = {}
    for base, prefix in ((ROOT, "innovwin"), (KERNELS, "innovwin.kernels")):
        for path in [*base.rglob("*.py"), *base.rglob("*.so")]:
            parts = [*path.parent.relative_to(base).parts, path.name.split(".")[0]]
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join([prefix, *parts])] = path
    return files


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the innovwin modules it imports anywhere in its file (module level or inside a function).

    ``from P import name`` imports the module P.name when there is one, else P itself. Importing a module
    counts as an edge to that module only, not to the packages above it, as a cycle is usually read.
    """
    graph = {}
    for name, path in files.items():
        targets = set()
        if path.suffix != ".py":  # the C++ extension imports nothing of innovwin
            graph[name] = targets
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in files else node.module
                            for alias in node.names}
        graph[name] = {target for target in targets if target in files and target != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) per strongly connected set of modules."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(node):  # Tarjan; the graph is a few hundred modules, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_through(graph, component) for component in components]


def _cycle_through(graph, component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth first, inside the component)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def test_find_cycles_names_each_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}}
    assert sorted(find_cycles(graph)) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph(module_files()))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)
