"""What is done to a round's models, step by step; each step returns its result.

A local run and a queue task call the same steps: `models.process_models` for the
models themselves (predict or reuse, post-process, check, archive, upload once),
`submitted` for what the ledger already holds.
"""
