"""One run directory's life while a process trains (or refines) its run: claim or resume it, record evaluations,
keep its log, its training state and the rows that state restores, and finish it with its summary.

A single run and every member of an ensemble go through the same :class:`RunLife` (the driver saves an ensemble's
states together, :func:`~innovwin.store.rundir.save_states`); ``refine`` records its evaluations with it too.
See :mod:`innovwin.store.rundir` for the files.
"""
from __future__ import annotations

import sys
from pathlib import Path

from innovwin.analysis import clocks, memorization
from innovwin.config import RunConfig
from innovwin.store import provenance, rundir
from innovwin.store.runlog import RunLog, truncate_loss


class RunLife:
    """The run ``config`` in ``out_dir``: what a training session writes there, in the order that keeps it
    resumable at any instant."""

    def __init__(self, out_dir, config: RunConfig, task):
        self.out_dir, self.config, self.task = Path(out_dir), config, task
        self.metrics = ""  # metrics.jsonl's text up to the step, kept in the state to restore a damaged file
        self.log: RunLog | None = None

    def prepare(self, force: bool) -> dict | None:
        """The saved training state to resume (reads only: a directory that is not this run's is refused)."""
        return rundir.prepare(self.out_dir, self.config, force)

    def saved_state(self) -> dict | None:
        return rundir.load_state(self.out_dir, self.config.key())

    def open(self, state: dict | None, evaluated: list[int], *, force: bool, device, echo=None,
             member: str = "") -> None:
        """Start the directory (or resume it at ``state``'s step, whose evaluations are ``evaluated``), a provenance
        session and the log; ``member`` names an ensemble member in the first log line."""
        step = state["step"] if state else 0
        if force:
            rundir.reset(self.out_dir)
        self.metrics, note = rundir.start(self.out_dir, self.config, state, evaluated)
        if note:
            print(f"innovwin train: {note}", file=sys.stderr)
        truncate_loss(self.out_dir, step)
        provenance.start_session(self.out_dir, device, step)
        self.log = RunLog(self.out_dir, self.config.steps, step, echo=echo,
                          last_row=(rundir.read_metrics(self.out_dir) or [None])[-1])
        config = self.config
        self.log.line(f"resume {self.out_dir}{member} from step {step} of {config.steps} (its saved training state)"
                      if state else f"start {self.out_dir}{member}: {config.arch} on {self.task.spec}, "
                                    f"N = {config.n_train}, {config.steps} steps, on {device}", echo=True)

    def stepped(self, step: int, loss: float | None, evaluating: bool) -> None:
        """After a training step: loss.jsonl's row (when ``loss`` is one), progress.json (the evaluation's own
        write follows when ``evaluating``)."""
        if loss is not None:
            self.log.loss(step, loss)
        if not evaluating:
            self.log.progress(step)

    def record(self, row: dict, samples: dict, model) -> None:
        """Append an evaluation's row (fsynced), write its per-sample arrays and snapshot, and say it."""
        self.metrics += rundir.append_metrics(self.out_dir, row)
        self.save_evaluation(row["step"], samples, model)
        self.log.progress(row["step"], row)
        self.log.line(f"step {row['step']}: train loss {row['train_loss']:.4f}, valid {row['valid_frac']:.3f}, "
                      f"copy {row['copy_frac']:.3f} (chance {row['chance_copy'] or 0:.2g}), "
                      f"eval {row['eval_seconds']:.1f} s")

    def insert(self, evaluations: list[tuple[dict, dict, object]]) -> None:
        """Put (row, per-sample arrays, model) evaluations between the recorded ones, in step order (refine's),
        and into the copy of the rows that state.pt keeps."""
        for row, samples, model in evaluations:
            self.save_evaluation(row["step"], samples, model)
        self.metrics = rundir.insert_metrics(self.out_dir, [row for row, _, _ in evaluations])
        state = self.saved_state()
        if state is not None:
            rundir.save_torch(self.out_dir / rundir.STATE, {**state, "metrics": self.metrics})

    def save_evaluation(self, step: int, samples: dict, model) -> None:
        rundir.save_eval_samples(self.out_dir, step, samples)
        if self.config.snapshots:
            rundir.save_snapshot(self.out_dir, step, self.task.spec, self.config.arch, model)

    def state(self, training: dict, timing: dict) -> dict:
        """state.pt's content: the ``training`` state (:meth:`Members.state`), whose run it is, the timing so far
        and the rows up to its step."""
        return {"key": self.config.key(), **training, "timing": dict(timing), "metrics": self.metrics}

    def finish(self, step: int, timing: dict, wall_s: float, **extra) -> dict:
        """Write summary.json (the clocks, the timing, and ``extra``), close the session and the log; the summary."""
        summary = self.summarize()
        loop_s = timing["train_s"] + timing["eval_s"]
        summary["timing"] = {
            "steps_per_s": self.config.steps / timing["train_s"] if timing["train_s"] else None,
            "eval_share": timing["eval_s"] / loop_s if loop_s else None,
            "wall_s": wall_s,
        }
        summary.update(extra, **rundir.carried_summary(self.out_dir))  # refine's planned steps outlive a rerun
        rundir.write_json(self.out_dir / rundir.SUMMARY, summary)
        provenance.end_session(self.out_dir, step)
        self.log.progress(step, state="done")
        for text in clocks.describe(summary).splitlines():
            self.log.line(text)
        return summary

    def summarize(self) -> dict:
        """summary.json's content (less the timing) from the directory's rows and per-sample arrays."""
        config = self.config
        rows = rundir.read_metrics(self.out_dir)
        samples = rundir.load_eval_samples(self.out_dir, [row["step"] for row in rows])
        summary = clocks.summarize(rows, samples.get("valid"), samples.get("copy"),
                                   rule_threshold=config.rule_threshold, mem_threshold=config.mem_threshold,
                                   n_resamples=config.bootstrap, seed=config.sampling_seed)
        if "heldout_hit" in samples:  # copies in excess of held-out hits at the last evaluation
            summary["memorization"] = {"step": rows[-1]["step"], **memorization.excess(
                samples["copy"][-1], samples["heldout_hit"][-1], n_resamples=config.bootstrap,
                seed=config.sampling_seed)}
        return {**summary, "final": rows[-1], "config": config.to_dict(), "out_dir": str(self.out_dir)}
