"""``python -m vitlib.export CHECKPOINT --to PATH OUT``: see :mod:`vitlib.export.cli`."""
import sys

from .cli import main

sys.exit(main())
