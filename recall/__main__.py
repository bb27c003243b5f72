"""``python -m recall [ACTION] [options]``: the same as ``mindstream recall ...``."""

import sys

from mindstream.cli import main

raise SystemExit(main(["recall", *sys.argv[1:]]))
