"""``python -m isplit ...``: the command line, where the console script is not installed."""

import sys

from isplit.cli import main

sys.exit(main())
