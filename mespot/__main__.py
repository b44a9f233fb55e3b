"""`python -m mespot ...` is the `mespot` command (where its script is not on PATH)."""

import sys

from mespot.cli import main

sys.exit(main())
