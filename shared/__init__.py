"""The product: a Numerai submission job for Azure Functions (see README.md)."""
