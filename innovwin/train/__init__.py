"""Training: runs end to end (``driver``: one session for a single run or a stacked ensemble, the evaluation
schedule, exact resume; ``lifecycle``: a run directory's life; ``members``: what steps and what state.pt holds;
``ensemble``: grouping K runs into one) and the training step itself (``step``: forward, backward, clipping,
optimizer; compiled on CUDA).
"""
from innovwin.train.driver import check_run, eval_steps, train
from innovwin.train.members import Trainer

__all__ = ["Trainer", "check_run", "eval_steps", "train"]
