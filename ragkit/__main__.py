"""``python -m ragkit``: the same as the ``ragkit`` command."""

from __future__ import annotations

import sys

from ragkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
