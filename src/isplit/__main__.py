"""``python -m isplit``: the same as the ``isplit`` command."""

import sys

from isplit.cli import main

sys.exit(main())
