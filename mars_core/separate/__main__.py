"""``python -m mars_core.separate``: the command line of :mod:`mars_core.separate.cli`."""

import sys

from .cli import main

sys.exit(main())
