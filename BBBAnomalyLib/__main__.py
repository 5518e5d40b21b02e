"""`python -m BBBAnomalyLib ...` is the same as the `bbbanomaly` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
