"""A run directory (EDM style): everything one run writes, and how it is read back.

    config.json                 the resolved RunConfig, in its groups (with its key)
    metrics.jsonl               one row per evaluation, appended and fsynced at once
    evals/step_00001234.npz     that evaluation's per-sample arrays (validity, copies, nearest neighbours,
                                packed samples): what the clocks' bootstrap resamples
    snapshots/step_00001234.pt  the evaluated model's weights (what the basin analysis reads)
    state.pt                    the latest full training state (model, optimizer, EMA, RNG states, step)
    summary.json                the clocks, the window, the final row and the timing, at the end

Every file except metrics.jsonl is written to a temporary name and moved into place, so a run killed at
any instant leaves either the old file or the new one. metrics.jsonl rows past the saved state's step are
dropped on resume (they will be written again, identically).
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch

CONFIG = "config.json"
METRICS = "metrics.jsonl"
STATE = "state.pt"
SUMMARY = "summary.json"
SNAPSHOTS = "snapshots"
EVALS = "evals"
OWNED = (CONFIG, METRICS, STATE, SUMMARY, SNAPSHOTS, EVALS)
_STEP_FILE = re.compile(r"step_(\d{8})\.(pt|npz)$")


# --- atomic writes -------------------------------------------------------------------------
def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsynced, then renamed over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def save_torch(path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def step_path(run_dir, folder: str, step: int, suffix: str) -> Path:
    return Path(run_dir) / folder / f"step_{step:08d}.{suffix}"


# --- claiming a directory ------------------------------------------------------------------
def prepare(run_dir, config, force: bool = False) -> dict | None:
    """Check that ``run_dir`` may hold ``config``'s run, and return the saved training state to resume.

    Reads only: refuses (ValueError) a directory holding a different run, a directory of other files, or
    a corrupt config.json or state.pt, unless ``force``, which means: start over (see :func:`reset`).
    """
    from innovwin.config import RunConfig

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
        saved = RunConfig.from_dict({k: v for k, v in json.loads(config_path.read_text()).items() if k != "key"})
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{config_path} is unreadable ({error}); pass --force to start over") from None
    if saved.key() != config.key():
        changed = [k for k, v in config.resolved().to_dict().items() if saved.resolved().to_dict().get(k) != v]
        raise ValueError(f"{run_dir} holds a different run (differs in {', '.join(changed) or 'key'}); "
                         "choose another --out or pass --force to overwrite it")
    return load_state(run_dir, config.key())


def load_state(run_dir, key: str) -> dict | None:
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
    if state.get("key") != key:
        raise ValueError(f"training state {path} belongs to another run; pass --force to start over")
    return state


def reset(run_dir) -> None:
    """Remove every file a run writes (and nothing else) from ``run_dir``."""
    run_dir = Path(run_dir)
    for name in OWNED:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def start(run_dir, config, resume_step: int) -> None:
    """Write config.json and drop whatever a killed run wrote past ``resume_step``.

    config.json comes first: a run killed at any point after it leaves a directory that :func:`prepare`
    recognizes as this run's, never one of run files without a config.
    """
    run_dir = Path(run_dir)
    write_json(run_dir / CONFIG, {**config.resolved().to_nested(), "key": config.key()})
    for folder in (SNAPSHOTS, EVALS):
        (run_dir / folder).mkdir(parents=True, exist_ok=True)
    rows = [row for row in read_metrics(run_dir) if row["step"] <= resume_step]
    write_atomic(run_dir / METRICS, "".join(json.dumps(row) + "\n" for row in rows).encode())
    for folder in (SNAPSHOTS, EVALS):
        for path in (run_dir / folder).iterdir():
            match = _STEP_FILE.match(path.name)
            if match is None or int(match.group(1)) > resume_step:
                path.unlink()
    summary = run_dir / SUMMARY
    if summary.exists():
        summary.unlink()


# --- metrics -------------------------------------------------------------------------------
def append_metrics(run_dir, row: dict) -> None:
    """Append one row and push it to disk before returning (a reader never waits on a buffer)."""
    with open(Path(run_dir) / METRICS, "a") as handle:
        handle.write(json.dumps(row, allow_nan=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_metrics(run_dir) -> list[dict]:
    """All complete rows; a torn last line (a run killed mid-write) is skipped."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines) - 1:
                raise ValueError(f"{path} line {number + 1} is not JSON") from None
    return rows


# --- per-evaluation samples ----------------------------------------------------------------
def save_eval_samples(run_dir, step: int, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(step_path(run_dir, EVALS, step, "npz"), buffer.getvalue())


def load_eval_samples(run_dir, steps) -> dict:
    """Per-sample arrays of the given evaluations, stacked: name -> (evals, samples, ...)."""
    loaded = []
    for step in steps:
        with np.load(step_path(run_dir, EVALS, step, "npz")) as data:
            loaded.append({name: data[name] for name in data.files})
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
    saved = torch.load(path, map_location="cpu", weights_only=True)
    task = tasks.make(saved["task"])
    size = {key: value for key, value in saved["size"].items() if key != "sigma_data"}  # older snapshots kept the
    # DiT's sigma_data with its size; it was always the encoding's default, which the objective now owns
    model = objectives.build_model(task, saved["arch"], **size)
    model.load_state_dict(saved["model"])
    return task, model.eval()
