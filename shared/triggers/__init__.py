"""What each Functions trigger (and the command line) calls: one module per trigger.

`function_app.py` only binds these to triggers. This layer reads the request,
chooses the executor (MODEL_EXECUTION), starts the run and turns its outcome
into an answer; the work itself is the run's (shared/run/).
"""
