"""Model workers: each model is loaded, predicted and validated in a process of its own.

`supervisor` runs in the run's process and starts the workers from the warm
fork servers that `pool` keeps (`forkserver`); `engine`,
`live_data` and `submission` run inside a worker (`python -m shared.worker`),
with `protocol` as what the two sides exchange.
"""
