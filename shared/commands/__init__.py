"""The command line's commands, one module per command group; `shared/cli.py` parses and dispatches.

They sit beside the triggers: they may use the run, the steps, storage, the Numerai client, the
formats and the settings; only `shared/cli.py` imports them.
"""
