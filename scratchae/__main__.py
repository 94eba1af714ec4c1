"""``python -m scratchae``: the ``scratchae`` command."""
import sys

from .cli import main

sys.exit(main())
