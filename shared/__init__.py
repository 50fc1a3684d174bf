"""The product: a Numerai submission job for Azure Functions (see README.md).

Importing it installs the redaction of secrets from every log record, before
anything in the app or its libraries logs (see shared/redaction.py).
"""

from shared.redaction import install as _install_redaction

_install_redaction()
