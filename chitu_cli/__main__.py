"""`python -m chitu_cli ...` (e.g. under `torchrun -m chitu_cli generate ...`) is the `chitu` console script."""

import sys

from chitu_cli.main import main

sys.exit(main())
