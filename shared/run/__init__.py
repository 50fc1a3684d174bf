"""One run of the job: plan it (round, manifest, account, ledger), hand its models to an executor, report.

The executor is the trigger layer's choice (shared/triggers/executors.py): the run
knows only the protocol in shared/executors/base.py.
"""
