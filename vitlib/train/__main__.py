"""``python -m vitlib.train``: see :mod:`vitlib.train.cli`."""
import sys

from .cli import main

sys.exit(main())
