"""``python -m vitlib.bench SUITE --json FILE``: see :mod:`vitlib.bench.cli`."""
import sys

from .cli import main

sys.exit(main())
