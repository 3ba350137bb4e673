"""`python -m reslab` (and `torchrun -m reslab`) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
