"""Start uss_dav: the CLI's `serve` command (`python -m uss_dav serve`, or the `uss-dav` script)."""

import sys

from uss_dav.cli import main

if __name__ == "__main__":  # the codec processes re-import this module
    sys.exit(main(["serve", *sys.argv[1:]]))
