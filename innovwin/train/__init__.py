"""Training: one run end to end (``driver``: steps, the evaluation schedule, run directory, exact resume) and the
training step itself (``step``: forward, backward, clipping, optimizer; compiled on CUDA).
"""
from innovwin.train.driver import Trainer, check_run, eval_steps, train

__all__ = ["Trainer", "check_run", "eval_steps", "train"]
