"""``python -m mars_core.data.importers DATASET --root PATH`` (also ``python -m mars_core.data import ...``)."""

import sys

from . import main

sys.exit(main())
