"""Evaluation: one evaluation of a model is generate -> decode -> pack once -> validate + search -> one metrics row.

:class:`Evaluator` fixes everything that must not change between a run's evaluations and calls the run's objective
for the generations; it knows no architecture.
"""
from innovwin.evaluation.evaluator import Evaluator

__all__ = ["Evaluator"]
