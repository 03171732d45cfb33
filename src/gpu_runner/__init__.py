"""gpu-runner: prove that GPU runtimes run their notebooks on every machine they support."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpu-runner")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
