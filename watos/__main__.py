"""``python -m watos``: the command line."""
import sys

from watos.cli import main

sys.exit(main())
