"""`python -m devstack up|down|status`: see `devstack.cli`."""

import sys

from devstack.cli import main

sys.exit(main())
