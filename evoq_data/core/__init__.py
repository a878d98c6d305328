"""What every stage shares: the error type, ids and hashes, safe writing, manifests, schemas
and the packaged sql/ and cards/ resources. Nothing here imports a stage."""

from evoq_data.core.errors import EvoqError, require

__all__ = ["EvoqError", "require"]
