"""`python -m uss_dav`: the management CLI (see uss_dav.cli)."""

import sys

from uss_dav.cli import main

sys.exit(main())
