"""``python -m recsim_personas`` runs the CLI."""

import sys

from recsim_personas.cli import main

sys.exit(main())
