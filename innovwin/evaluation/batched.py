"""One evaluation of K stacked members at once: their generations in one batched call, then each member's row.

Generation is the cost of an evaluation (a DiT sample is two network calls per Heun step, a GPT sample one cached
pass), so it runs once over the K*M starting points of all members on the stacked network; the objective joins the
members' starts (``join_starts``, a member of the objective protocol that a stackable architecture's objective
has). Decoding, packing, validation, the search and the losses then run member by member through each member's
own :class:`Evaluator` (its training set, its fixed loss inputs, its plain backbone).
"""
from __future__ import annotations

import time

from innovwin.evaluation.evaluator import Evaluator, _sync


def evaluate_members(net, models: list, evaluators: list[Evaluator], step: int) -> list[tuple[dict, dict]]:
    """(row, per-sample arrays) of each member at ``step``; ``net`` is the stacked network (K*M rows in and out),
    ``models`` the members' own backbones (for their losses). Each row's eval_seconds is its share of the
    batched generation plus its own scoring."""
    members = len(evaluators)
    _sync(evaluators[0].device)
    start = time.perf_counter()
    objective = evaluators[0].objective  # the members share its sampler settings (train.ensemble.signature)
    cells, outputs = objective.generate(net, objective.join_starts([evaluator.start for evaluator in evaluators]))
    share = (time.perf_counter() - start) / members
    rows = len(cells) // members
    results = []
    for k, (model, evaluator) in enumerate(zip(models, evaluators)):
        part = slice(k * rows, (k + 1) * rows)
        results.append(evaluator.score(model, step, cells[part], None if outputs is None else outputs[part], share))
    return results
