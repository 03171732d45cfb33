"""``python -m gpu_runner`` is ``gpu-runner``."""

from .cli import main

main()
