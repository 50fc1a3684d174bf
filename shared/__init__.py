"""The product: a Numerai submission job for Azure Functions (see README.md).

Importing it installs the redaction of secrets from every log record, before
anything in the app or its libraries logs (see shared/redaction.py), and keeps
the Azure SDK's per-request logging out of the logs (see shared/console.py).
"""

from shared.console import quiet_libraries as _quiet_libraries
from shared.redaction import install as _install_redaction

_install_redaction()
_quiet_libraries()
