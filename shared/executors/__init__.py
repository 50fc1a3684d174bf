"""Where a run's models are worked on: on this instance (`local`), or as one queue task each (`queue`).

The trigger layer chooses one (MODEL_EXECUTION) and hands it to the run; the run
knows only the `Executor` protocol. Both call the same model step
(shared/steps/models.py).
"""
