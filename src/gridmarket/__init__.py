"""gridmarket: consumer-centric community energy markets with batteries on real OpenDSS grids."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gridmarket")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
