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
from innovwin.train import until
from innovwin.train.until import StopRule


class RunLife:
    """The run ``config`` in ``out_dir``: what a training session writes there, in the order that keeps it
    resumable at any instant."""

    def __init__(self, out_dir, config: RunConfig, task):
        self.out_dir, self.config, self.task = Path(out_dir), config, task
        self.metrics = ""  # metrics.jsonl's text up to the step, kept in the state to restore a damaged file
        self.log: RunLog | None = None
        self.stop, self.trained = StopRule(config), 0

    def prepare(self, force: bool) -> dict | None:
        """The saved training state to resume (reads only: a directory that is not this run's is refused), its
        rows read into the run's stop rule."""
        return self._resume(rundir.prepare(self.out_dir, self.config, force))

    def saved_state(self) -> dict | None:
        return self._resume(rundir.load_state(self.out_dir, self.config.key()))

    def _resume(self, state: dict | None) -> dict | None:
        self.stop, self.trained = StopRule(self.config), state["step"] if state else 0
        if state is None:
            return None
        path = self.out_dir / rundir.METRICS
        rows = (rundir.parse_metrics(state["metrics"], path) if "metrics" in state else
                [row for row in rundir.read_metrics(self.out_dir) if row["step"] <= state["step"]])
        steps = [row["step"] for row in rows if self.stop.reads(row)]
        samples = rundir.load_eval_samples(self.out_dir, steps)
        arrays = {step: {name: values[i] for name, values in samples.items()} for i, step in enumerate(steps)}
        for row in rows:
            self.stop.add(row, arrays.get(row["step"]))
        return state

    def ended(self, trained: int) -> bool:
        """Whether the run is done once trained to step ``trained`` (:class:`~innovwin.train.until.StopRule`)."""
        return self.stop.end(trained) is not None

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
        config, end = self.config, self.stop.end(step)
        if end is not None and end[0] < step:
            line = f"answer {self.out_dir}{member} from its rows up to step {end[0]} (trained to step {step})"
        elif state:
            line = f"resume {self.out_dir}{member} from step {step} of {config.steps} (its saved training state)"
        else:
            line = (f"start {self.out_dir}{member}: {config.arch} on {self.task.spec}, N = {config.n_train}, "
                    f"{config.steps} steps{until.budget_words(config)}, on {device}")
        self.log.line(line, echo=True)
        if end is None:  # it trains on: its summary (of fewer steps) no longer holds, dropped once all above is
            (self.out_dir / rundir.SUMMARY).unlink(missing_ok=True)  # written (a rerun that fails keeps it)

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
        self.stop.add(row, samples)
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

    def finish(self, trained: int, timing: dict, wall_s: float, **extra) -> dict:
        """Write summary.json (the clocks of the rows up to the run's stop, the stop, the timing, and ``extra``),
        close the session and the log; the summary. ``trained``: the step training reached."""
        end, reason = self.stop.end(trained)
        loop_s = timing["train_s"] + timing["eval_s"]
        summary = self.write_summary({"reason": reason, "step": end, "trained": trained}, {
            "steps_per_s": trained / timing["train_s"] if timing["train_s"] else None,
            "eval_share": timing["eval_s"] / loop_s if loop_s else None,
            "wall_s": wall_s,
        }, **extra)
        provenance.end_session(self.out_dir, trained)
        self.log.progress(trained, state="done")
        for text in [*clocks.describe(summary).splitlines(), until.describe(summary)]:
            self.log.line(text)
        return summary

    def write_summary(self, stop: dict | None, timing: dict | None, *, refined: dict | None = None,
                      **extra) -> dict:
        """Write summary.json, whole, and return it: the clocks of the rows up to ``stop``'s step (every row where a
        run summarized before stops were recorded has none), the stop, the ``timing``, ``extra`` (an ensemble
        member's place), and the fields of the summary it replaces that a rewrite keeps (:data:`rundir.CARRIED`),
        refine's planned steps merged with ``refined``."""
        summary = {**self.summarize(stop["step"] if stop else None), **({"stop": stop} if stop else {}),
                   "timing": timing, **extra, **rundir.carried_summary(self.out_dir)}
        if refined is not None:
            summary["refined"] = {**summary.get("refined", {}), **refined}
        rundir.write_json(self.out_dir / rundir.SUMMARY, summary)
        return summary

    def summarize(self, end: int | None = None) -> dict:
        """summary.json's content (less the stop and the timing) from the directory's rows up to step ``end`` (None:
        all) and their per-sample arrays."""
        config = self.config
        rows = [row for row in rundir.read_metrics(self.out_dir) if end is None or row["step"] <= end]
        samples = rundir.load_eval_samples(self.out_dir, [row["step"] for row in rows])
        summary = clocks.summarize(rows, samples.get("valid"), samples.get("copy"),
                                   rule_threshold=config.rule_threshold, mem_threshold=config.mem_threshold,
                                   n_resamples=config.bootstrap, seed=config.sampling_seed)
        if "heldout_hit" in samples:  # copies in excess of held-out hits at the last evaluation
            summary["memorization"] = {"step": rows[-1]["step"], **memorization.excess(
                samples["copy"][-1], samples["heldout_hit"][-1], n_resamples=config.bootstrap,
                seed=config.sampling_seed)}
        return {**summary, "final": rows[-1], "config": config.to_dict(), "out_dir": str(self.out_dir)}
