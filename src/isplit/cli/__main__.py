"""``python -m isplit.cli``: the same as ``python -m isplit``."""

import sys

from isplit.cli import main

sys.exit(main())
