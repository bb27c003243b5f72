"""``python -m recall [ACTION] [options]``: the same as ``mindstream recall ...``."""

import sys

from mindstream.command import run_stage
from recall.cli import register

raise SystemExit(run_stage(register, ["recall", *sys.argv[1:]]))
