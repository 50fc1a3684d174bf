"""`python -m shared.worker`: the fork server that starts models' workers (see forkserver.py).

Started by `shared.worker.supervisor` with a clean environment, never by hand.
"""

import logging
import sys

from shared.worker.forkserver import serve

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
sys.exit(serve())
