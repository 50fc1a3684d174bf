"""`python -m shared.worker`: the fork server that starts models' workers (see forkserver.py).

Started by `shared.worker.pool` with a clean environment, never by hand; its one
argument, if any, is the framework to import before forking (see PRELOADED).
"""

import logging
import os
import sys

from shared.worker.forkserver import serve

logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
code = serve(sys.argv[1] if len(sys.argv) > 1 else None)
logging.shutdown()
# Without the interpreter's teardown of pandas, pyarrow and scipy (about 0.4 s), which whoever
# closes the server waits for: a command-line run at its exit, a run retiring an old server.
os._exit(code)
