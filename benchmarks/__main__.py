"""``python -m benchmarks [options]``: the same as ``tiered-session bench [options]``."""

from __future__ import annotations

import sys

from tiered_session.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
