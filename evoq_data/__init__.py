"""evoq data plane: pools, pairs, votes, aggregation, publishing and evaluation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evoq")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
