"""``python -m infra ACTION`` is ``mindstream services ACTION``."""

import sys

from mindstream.cli import main

raise SystemExit(main(["services", *sys.argv[1:]]))
