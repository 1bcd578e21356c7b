"""Docs that cannot drift: every dotted ``innovwin.`` name that a docstring (of innovwin/ and kernels/) or a page
(docs/*.md, README.md) mentions resolves to a module or a module's attribute. A rename or a move that leaves a
mention behind fails here, with the list of names and where each is mentioned."""
import ast
import importlib
import re
from pathlib import Path

import innovwin

PACKAGE = Path(innovwin.__file__).parent
REPO = PACKAGE.parent
DOTTED = re.compile(r"\binnovwin(?:\.[A-Za-z_]\w*)+")


def docstrings(path: Path):
    """The docstrings of a module and of every class and function in it."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=False)
            if text:
                yield text


def mentions() -> dict[str, set[str]]:
    """Dotted name -> the files that mention it (paths relative to the repository)."""
    found = {}
    sources = [(path, "\n".join(docstrings(path))) for folder in (PACKAGE, REPO / "kernels")
               for path in sorted(folder.rglob("*.py"))]
    sources += [(path, path.read_text()) for path in [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]]
    for path, text in sources:
        for name in DOTTED.findall(text):
            found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def resolves(name: str) -> bool:
    """True when ``name`` is a module, or a module's attribute (attributes of attributes too)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            try:
                value = getattr(value, attribute)
            except AttributeError:
                return False
        return True
    return False


def test_a_dotted_name_resolves_to_a_module_or_its_attribute():
    assert resolves("innovwin.analysis.clocks.read_clock") and resolves("innovwin.kernels.hamming")
    assert not resolves("innovwin.sensitivity") and not resolves("innovwin.analysis.clocks.no_such_name")


def test_every_dotted_name_in_docstrings_and_docs_resolves():
    unresolved = {name: files for name, files in mentions().items() if not resolves(name)}
    assert not unresolved, "dotted names that resolve to nothing:\n" + "\n".join(
        f"  {name}  (in {', '.join(sorted(files))})" for name, files in sorted(unresolved.items()))


def protocol_table() -> dict[str, bool]:
    """docs/architecture.md's objective protocol table: member -> whether its row marks it optional (italics)."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## The objective protocol", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)\(.*?\)` \| (.*) \|$", section, flags=re.MULTILINE)
    return {member: meaning.startswith("*") for member, meaning in rows}


def test_the_protocol_table_lists_the_protocols_members():
    from innovwin.objectives import protocol

    optional = {name for names in protocol.OPTIONAL.values() for name in names}
    assert protocol_table() == {**{name: False for name in protocol.REQUIRED}, **{name: True for name in optional}}


def test_every_study_spec_in_the_docs_expands_and_passes_the_sweeps_checks(tmp_path):
    """The specs docs/ says made (or will make) a result: each loads, expands and passes what a sweep checks first."""
    from innovwin.sweeps.plan import check_sweep
    from innovwin.sweeps.spec import load_spec

    specs = sorted((REPO / "docs" / "studies").rglob("*.toml"))
    assert specs
    for path in specs:
        runs = load_spec(path).expand()
        assert runs, path
        check_sweep(runs, tmp_path / path.stem, max_attempts=3, ensemble=1, workers=None, executor="local",
                    ray_address=None)


def test_a_study_run_in_steps_is_made_of_its_specs_runs():
    """docs/studies/NAME/*.toml are the steps NAME.toml was run in so far: runs of NAME.toml (the same keys, the
    same configs), none run twice."""
    from innovwin.sweeps.spec import load_spec

    for folder in (path for path in (REPO / "docs" / "studies").iterdir() if path.is_dir()):
        whole = load_spec(folder.with_suffix(".toml")).expand()
        steps = [load_spec(path).expand() for path in sorted(folder.glob("*.toml"))]
        keys = [key for step in steps for key in step]
        assert len(keys) == len(set(keys)) and set(keys) <= set(whole), folder
        assert all(config == whole[key] for step in steps for key, config in step.items()), folder
