"""`python -m connector` runs the command line."""

import sys

from connector.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
