"""A run directory (EDM style): everything one run writes, and how it is read back.

    config.json                 the resolved RunConfig, in its groups (with its key)
    metrics.jsonl               one row per evaluation, appended and fsynced at once
    evals/step_00001234.npz     that evaluation's per-sample arrays (validity, copies, nearest neighbours,
                                packed samples): what the clocks' bootstrap resamples
    snapshots/step_00001234.pt  the evaluated model's weights (what the basin analysis reads)
    state.pt                    the latest full training state (model, optimizer, EMA, RNG states, step)
    state.next.pt               a stacked ensemble's next state, present only while its members' states are
                                being saved together (see :func:`save_states`)
    summary.json                the clocks, the window, the final row and the timing, at the end
    provenance.json             versions, commit, device, host and times of each session (innovwin.store.provenance)
    log.txt, loss.jsonl         console lines; training loss every 10 steps (innovwin.store.runlog)
    progress.json               the live step, rate and last rates a sweep driver shows (innovwin.store.runlog)
    basins.jsonl, basins_*.png  the basin dissection's rows and figures (``innovwin basins``; innovwin.analysis.basins)

    .lock                       held (flock) by the one process (train, basins) working in the directory

Every file except metrics.jsonl is written to a temporary name and moved into place, so a run killed at
any instant leaves either the old file or the new one (a temporary a killed run left is removed by the next
one, under the lock). state.pt keeps a copy of metrics.jsonl's rows up to its step, so on resume the file is
rewritten from it: rows past the saved step are dropped (they will be written again, identically), and a torn,
garbled or deleted row is restored rather than lost (a refined row only the file holds is kept). Readers refuse a
torn row, and a file of another shape (each file's schema is in :mod:`innovwin.store.schemas`; metrics.jsonl's
I/O in :mod:`innovwin.store.metrics`). See docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from innovwin.store import schemas
from innovwin.store.files import naming, read_json, write_atomic, write_json  # noqa: F401 (part of rundir's API)
from innovwin.store.metrics import (METRICS, STATE, append_metrics, insert_metrics,  # noqa: F401 (rundir's API)
                                    metrics_line, parse_metrics, read_metrics)
from innovwin.store.provenance import PROVENANCE
from innovwin.store.runlog import LOG, LOSS, PROGRESS

CONFIG = "config.json"
STATE_NEXT = "state.next.pt"
SUMMARY = "summary.json"
SNAPSHOTS = "snapshots"
EVALS = "evals"
LOCK = ".lock"
BASINS = "basins.jsonl"
BASIN_FIGURES = "basins_*.png"  # a glob: the figures' names are the report's, under this prefix
OWNED = (CONFIG, METRICS, STATE, STATE_NEXT, SUMMARY, SNAPSHOTS, EVALS, PROVENANCE, LOG, LOSS, PROGRESS, BASINS)
_STEP_FILE = re.compile(r"step_(\d{8})\.(pt|npz)$")
_TEMPORARY = re.compile(r"^\..+\.\d+\.tmp$")


# --- writes ------------------------------------------------------------------------------
def save_torch(path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def step_path(run_dir, folder: str, step: int, suffix: str) -> Path:
    return Path(run_dir) / folder / f"step_{step:08d}.{suffix}"


def read_config(run_dir):
    """The run's own config from its config.json: the one reader (fields added since the run was made read as the
    values it was made with, :meth:`RunConfig.from_record`). ValueError naming the directory otherwise."""
    from innovwin.config import RunConfig

    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory (no {CONFIG})")
    try:
        return RunConfig.from_record(read_json(path))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} is unreadable ({error})") from None


# --- one process per directory -------------------------------------------------------------
@contextlib.contextmanager
def locked(run_dir, purpose: str, *, wait_s: float = 0.0):
    """Hold ``run_dir``'s lock (creating the directory) while one process trains or measures in it.

    A second process is refused with the holder's pid, rather than interleaving its rows with the first's: at once,
    or after waiting up to ``wait_s`` seconds for the holder to leave (a sweep's retry waits out a killed driver's
    straggler). The kernel drops the lock when its holder dies, so a killed run never leaves it stuck.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir} exists and is not a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK, "a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ValueError(f"{run_dir} is in use ({holder}); wait for it to finish or stop it first") from None
        handle.truncate(0)
        handle.write(f"{purpose}, pid {os.getpid()}")
        handle.flush()
        remove_temporaries(run_dir)
        yield


def remove_temporaries(run_dir) -> None:
    """Delete what :func:`write_atomic` calls a killed process left (only safe under the lock)."""
    for folder in (Path(run_dir), Path(run_dir) / SNAPSHOTS, Path(run_dir) / EVALS):
        if folder.is_dir():
            for path in folder.iterdir():
                if _TEMPORARY.match(path.name) and path.is_file():
                    path.unlink()


# --- claiming a directory ------------------------------------------------------------------
def prepare(run_dir, config, force: bool = False) -> dict | None:
    """Check that ``run_dir`` may hold ``config``'s run, and return the saved training state to resume.

    Reads only: refuses (ValueError) a directory holding a different run, a directory of other files, or
    a corrupt config.json or state.pt, unless ``force``, which means: start over (see :func:`reset`).
    """
    run_dir = Path(run_dir)
    if force or not run_dir.exists():
        return None
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} exists and is not a directory")
    config_path = run_dir / CONFIG
    if not config_path.exists():
        others = [p.name for p in run_dir.iterdir() if not p.name.startswith(".")]
        if others:
            raise ValueError(f"{run_dir} holds other files ({', '.join(sorted(others)[:3])}) and no {CONFIG}: "
                             "not a run directory; choose another --out or pass --force")
        return None
    try:
        saved = read_config(run_dir)
    except ValueError as error:
        raise ValueError(f"{error}; pass --force to start over") from None
    if saved.key() != config.key():
        from innovwin.config import UNKEYED

        changed = [k for k, v in config.resolved().to_dict().items()
                   if k not in UNKEYED and saved.resolved().to_dict().get(k) != v]
        raise ValueError(f"{run_dir} holds a different run (differs in {', '.join(changed) or 'key'}); "
                         "choose another --out or pass --force to overwrite it")
    return load_state(run_dir, config.key())


def load_state(run_dir, key: str) -> dict | None:
    """The saved training state of run ``key`` in ``run_dir``, or None. A state saved before the budget left the
    run key carries the earlier key of the config.json beside it (:meth:`RunConfig.earlier_key`), also accepted;
    :func:`start` rekeys it."""
    path = Path(run_dir) / STATE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("not a training state")
    except Exception as error:  # torch raises many kinds on a truncated or foreign file
        raise ValueError(f"training state {path} is corrupt ({type(error).__name__}); "
                         "delete it to restart from scratch, or pass --force") from None
    if state.get("key") not in _keys(run_dir, key):
        raise ValueError(f"training state {path} belongs to another run; pass --force to start over")
    return state


def _keys(run_dir, key: str) -> set[str]:
    """The keys run ``key`` may have been saved under in ``run_dir``: its own, and the earlier key (steps hashed)
    of the run its config.json records, when that is this run."""
    keys = {key}
    with contextlib.suppress(ValueError):
        saved = read_config(run_dir)
        if saved.key() == key:
            keys.add(saved.earlier_key())
    return keys


def save_states(states: dict) -> None:
    """Save several runs' training states as one (run directory -> state; a stacked ensemble's members).

    Every state is first written whole beside its state.pt, then all are moved into place: a run killed at any
    instant leaves a set that :func:`settle_states` completes (all written) or undoes (not all written).
    """
    for run_dir, state in states.items():
        save_torch(Path(run_dir) / STATE_NEXT, state)
    for run_dir in states:
        os.replace(Path(run_dir) / STATE_NEXT, Path(run_dir) / STATE)


def settle_states(run_dirs) -> bool:
    """Finish or undo a :func:`save_states` that was interrupted; True when states were moved into place.

    It was complete if every directory holds either its next state or a state.pt at that step already (moved).
    """
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    pending = [run_dir for run_dir in run_dirs if (run_dir / STATE_NEXT).exists()]
    if not pending:
        return False

    def step(path):
        return torch.load(path, map_location="cpu", weights_only=True)["step"] if path.exists() else None

    target = step(pending[0] / STATE_NEXT)
    complete = all(run_dir in pending or step(run_dir / STATE) == target for run_dir in run_dirs)
    for run_dir in pending:
        if complete:
            os.replace(run_dir / STATE_NEXT, run_dir / STATE)
        else:
            (run_dir / STATE_NEXT).unlink()
    return complete


def reset(run_dir) -> None:
    """Remove every file a run writes, its basin dissection's included (and nothing else), from ``run_dir``."""
    run_dir = Path(run_dir)
    for path in [run_dir / name for name in OWNED] + basin_figures(run_dir):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def basin_figures(run_dir) -> list[Path]:
    """The basin figures (``basins_*.png``) in ``run_dir``, sorted by name; none when it was never dissected."""
    return sorted(path for path in Path(run_dir).glob(BASIN_FIGURES) if path.is_file())


def start(run_dir, config, state: dict | None, evaluated: list[int]) -> tuple[str, str | None]:
    """Write config.json, put back metrics.jsonl as the saved ``state`` knew it, and drop whatever a killed run
    wrote past the state's step. ``evaluated``: the evaluation steps up to that step (the rows it must have).

    Returns metrics.jsonl's text and a note when rows had to be restored. config.json comes first: a run killed
    at any point after it leaves a directory that :func:`prepare` recognizes as this run's. summary.json is kept:
    a finished run's rerun replaces it atomically, so a step of the rerun that fails never loses it (a run that
    trains on drops it once its session has started, :meth:`innovwin.train.lifecycle.RunLife.open`).
    """
    run_dir = Path(run_dir)
    resume_step = state["step"] if state else 0
    if state and state.get("key") != config.key():  # saved under the earlier key, which config.json names
        save_torch(run_dir / STATE, {**state, "key": config.key()})
    write_json(run_dir / CONFIG, {**config.resolved().to_nested(), "key": config.key()})
    for folder in (SNAPSHOTS, EVALS):
        (run_dir / folder).mkdir(parents=True, exist_ok=True)
    text, note = _metrics_to_resume(run_dir, state, evaluated)
    write_atomic(run_dir / METRICS, text.encode())
    for folder in (SNAPSHOTS, EVALS):
        for path in (run_dir / folder).iterdir():
            match = _STEP_FILE.match(path.name)
            if match is None or int(match.group(1)) > resume_step:
                path.unlink()
    return text, note


def _metrics_to_resume(run_dir: Path, state: dict | None, evaluated: list[int]) -> tuple[str, str | None]:
    """metrics.jsonl's rows up to the state's step: the state's own copy, or (a state written before it kept one)
    the file's rows, refused unless they are exactly the evaluations up to that step."""
    if state is None:
        return "", None  # a new run, or one whose state was deleted: it starts again from step 0
    path = run_dir / METRICS
    current = path.read_bytes().decode(errors="replace") if path.is_file() else ""
    if "metrics" in state:
        text = _with_refined_rows(run_dir, state, current)
        if current.startswith(text):  # rows past the saved step are a killed run's: dropped, written again
            return text, None
        return text, (f"{path} was damaged (torn, garbled or shortened); its {len(text.splitlines())} rows up to step "
                      f"{state['step']} were restored from {STATE}")
    try:
        rows = [row for row in parse_metrics(current, path) if row["step"] <= state["step"]]
    except ValueError:
        rows = None
    if rows is None or [row["step"] for row in rows] != evaluated:
        raise ValueError(f"{path} is damaged (rows up to step {state['step']} torn or missing) and {STATE} keeps no "
                         "copy of them (an older innovwin wrote it); pass --force to start over")
    return "".join(metrics_line(row) for row in rows), None


# --- summary -------------------------------------------------------------------------------
CARRIED = ("refined",)  # what a rerun's summary keeps of the one it replaces: refine's planned steps


def read_summary(run_dir) -> dict | None:
    """summary.json (None before the run finished), refused (named) unless it holds both clocks whole
    (:data:`~innovwin.store.schemas.SUMMARY`): a summary that lost a clock would read as one that never crossed."""
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        return None
    return schemas.check(read_json(path), str(path), schemas.SUMMARY, schemas.SUMMARY_OPTIONAL,
                         fix=f"rerun the run's `innovwin train --out {run_dir}` to write it again")


def carried_summary(run_dir) -> dict:
    """The fields of the run's summary that its rerun keeps (:data:`CARRIED`); none from a damaged summary, which
    the rerun rewrites whole."""
    try:
        old = read_summary(run_dir) or {}
    except ValueError:
        return {}
    return {name: old[name] for name in CARRIED if name in old}


def _with_refined_rows(run_dir: Path, state: dict, current: str) -> str:
    """The state's copy of the rows, with the refined rows of ``current`` (metrics.jsonl) that it lacks put back in
    step order: a refine killed between writing metrics.jsonl and state.pt leaves them only in the file (their
    per-sample arrays written before either), and a rerun of train must not drop a measured row."""
    saved = parse_metrics(state["metrics"], Path(run_dir) / STATE)
    known = {row["step"] for row in saved}
    extra = []
    for line in current.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (not schemas.problems(row, schemas.METRICS_ROW) and row.get("refined") is True
                and row["step"] not in known and row["step"] <= state["step"]
                and step_path(run_dir, EVALS, row["step"], "npz").is_file()):
            extra.append(row)
    if not extra:
        return state["metrics"]
    return "".join(metrics_line(row) for row in sorted(saved + extra, key=lambda one: one["step"]))


# --- per-evaluation samples ----------------------------------------------------------------
def save_eval_samples(run_dir, step: int, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(step_path(run_dir, EVALS, step, "npz"), buffer.getvalue())


def load_eval_samples(run_dir, steps) -> dict:
    """Per-sample arrays of the given evaluations, stacked: name -> (evals, samples, ...)."""
    loaded = []
    for step in steps:
        path = step_path(run_dir, EVALS, step, "npz")
        try:
            with np.load(path) as data:
                loaded.append({name: data[name] for name in data.files})
        except FileNotFoundError:
            raise ValueError(f"{path} is missing: the run's evaluation at step {step} has no per-sample arrays; "
                             "pass --force to train the run again") from None
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is corrupt ({type(error).__name__}); "
                             "pass --force to train the run again") from None
    return {name: np.stack([one[name] for one in loaded]) for name in loaded[0]} if loaded else {}


# --- snapshots -----------------------------------------------------------------------------
def save_snapshot(run_dir, step: int, task_spec: str, arch: str, model) -> None:
    state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
    save_torch(step_path(run_dir, SNAPSHOTS, step, "pt"),
               {"step": step, "task": task_spec, "arch": arch, "size": model.size_config(), "model": state})


def snapshot_steps(run_dir) -> list[int]:
    folder = Path(run_dir) / SNAPSHOTS
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name)) and m.group(2) == "pt")


def load_snapshot(run_dir, step: int):
    """The task and the model (CPU, eval mode) as they were evaluated at ``step``."""
    from innovwin import objectives, tasks

    path = step_path(run_dir, SNAPSHOTS, step, "pt")
    if not path.exists():
        raise ValueError(f"no snapshot at step {step} in {run_dir} (have: {snapshot_steps(run_dir)})")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        task = tasks.make(saved["task"])
        size = {key: value for key, value in saved["size"].items() if key != "sigma_data"}  # older snapshots kept
        # the DiT's sigma_data with its size; it was always the encoding's default, which the objective now owns
        model = objectives.build_model(task, saved["arch"], **size)
        model.load_state_dict(saved["model"])
    except Exception as error:  # torch raises many kinds on a truncated or foreign file
        raise ValueError(f"snapshot {path} is corrupt ({type(error).__name__}); delete it, or pass "
                         "--snapshots with the steps to measure") from None
    return task, model.eval()
