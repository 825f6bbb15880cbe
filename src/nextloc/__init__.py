"""nextloc: next-location prediction from visit sequences."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nextloc")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"


def load_run(run_dir):
    """The trained model of a finished run directory, its config and data tables: see :mod:`nextloc.trained`."""
    from nextloc.trained import load_run as load  # here: ``import nextloc`` stays light

    return load(run_dir)
