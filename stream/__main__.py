"""``python -m stream ACTION`` is ``mindstream stream ACTION``."""

import sys

from mindstream.command import run_stage
from stream.cli import register

raise SystemExit(run_stage(register, ["stream", *sys.argv[1:]]))
