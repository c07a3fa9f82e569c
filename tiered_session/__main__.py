"""``python -m tiered_session`` runs the CLI."""

import sys

from .cli import main

sys.exit(main())
