"""`python -m BBBAnomalyLib ...` is the same as the `bbbanomaly` command."""

import sys

if __name__ == "__main__":
    try:
        from .cli import main
    except KeyboardInterrupt:  # Ctrl-C while the libraries load: nothing has started, nothing to say
        sys.exit(130)
    sys.exit(main())
