"""``python -m isplit``: the command line (also what ``torchrun -m isplit`` runs on each rank)."""

import sys

from isplit.cli import main

sys.exit(main())
