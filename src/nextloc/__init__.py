"""nextloc: next-location prediction from visit sequences."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nextloc")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
