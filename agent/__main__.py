"""`python -m agent` is the doge-agent command."""

import sys

from agent.cli import main

sys.exit(main())
