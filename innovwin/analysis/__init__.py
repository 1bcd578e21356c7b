"""Analysis of finished measurements: the clocks and the window (``clocks``), a finished run's result as one record
(``records``), scaling fits (``fits``), threshold sensitivity (``sensitivity``) and the basin dissection of
diffusion snapshots (``basins``). It reads run directories and stores; it never imports the trainer.
"""
