"""The package's layers import one way (docs/architecture.md): a module imports only its own layer and layers
below it, at module level or inside functions. A new upward import fails here, not in a review."""
import ast
from pathlib import Path

import innovwin

ROOT = Path(innovwin.__file__).parent
# Lowest first. ``config`` sits above tasks and objectives: it resolves task specs and checks architecture
# names against the registry. ``train`` sits above ``analysis``: it summarizes a run with the clocks.
LAYERS = [
    {"naming", "tomlfile", "_native_loader", "runtime", "_native"},
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
