"""`python -m retino.data.prepare`: the command of cache.py, run as the package."""

import sys

from retino.data.prepare.cache import main

if __name__ == "__main__":
    sys.exit(main())
