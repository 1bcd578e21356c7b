"""The store's file I/O, below every file format in it: a write that a kill at any instant leaves either old or
new (:func:`write_atomic`), JSON objects written that way and read back with a named error. The run directory
(``rundir``), its provenance and its live log (``runlog``) all write through here, so none imports another for it.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


def temporary_path(path) -> Path:
    """Where :func:`write_atomic` writes ``path`` first: ``.NAME.PID.tmp`` beside it (what a later process, under
    the run directory's lock, recognizes as a killed writer's leftover and removes)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file, then rename it over ``path``. ``fsync`` (default) makes
    the new file durable before the rename; a file rewritten every second (progress.json) may skip it."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with naming(path), open(tmp, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk (or a signal) must not leave the temporary behind
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def naming(path):
    """Give an OSError raised without a file name (a write or fsync on a full disk) the name of ``path``, so
    the command line's one-line message says where."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.strerror:
            raise type(error)(error.errno, error.strerror, str(path)) from None
        raise


def write_json(path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def read_json(path) -> dict:
    """A JSON object from ``path``; ValueError naming the file when it is garbled."""
    try:
        value = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is garbled ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} is garbled (a JSON {type(value).__name__}, not an object)")
    return value


def write_jsonl(path, rows, allow_nan: bool = False) -> None:
    """Rewrite a JSON-lines file (one object a line) atomically; ``allow_nan`` for rows that may hold a diverged
    value (loss.jsonl's)."""
    write_atomic(path, "".join(json.dumps(row, allow_nan=allow_nan) + "\n" for row in rows).encode())
