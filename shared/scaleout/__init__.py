"""Queue mode (MODEL_EXECUTION=queue): one Storage-queue task per model, fanned out and in.

The flow, without a coordinator of our own:

    timer or test run ─ fanout.fan_out ─► plan + running report (results container)
                                     └──► one message per model, and a deadline message (task queue)
    queue trigger ──── task.run_task ──► one model: predict, archive, upload once; its result
                                     └──► fanin.finish_if_complete: the task that completes the
                                          set writes the final report (conditional write)
    poison queue ───── task.run_poisoned ► a task that never finished: its model failed
    deadline message ─ fanin.handle_deadline ► models with no result by the deadline failed

The Functions host does the scheduling: it scales the queue trigger out across
instances, retries a failed message, and moves it to `<queue>-poison` after
host.json's maxDequeueCount.
"""
