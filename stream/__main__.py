"""``python -m stream ACTION`` is ``mindstream stream ACTION``."""

import sys

from mindstream.cli import main

raise SystemExit(main(["stream", *sys.argv[1:]]))
