"""evoq data plane: pools, pairs, votes, aggregation, publishing and evaluation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evoq")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]


def load_preferences(repo_or_dir, revision=None, config="preferences", **kwargs):
    """The ``preferences`` rows of a published evoq dataset with their images, whatever its
    image layout (:func:`evoq_data.load.load_preferences`)."""
    from evoq_data.load import load_preferences as load

    return load(repo_or_dir, revision, config, **kwargs)


__all__ += ["load_preferences"]
