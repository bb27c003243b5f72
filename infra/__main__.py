"""``python -m infra ACTION`` is ``mindstream services ACTION``."""

import sys

from infra.cli import register
from mindstream.command import run_stage

raise SystemExit(run_stage(register, ["services", *sys.argv[1:]]))
