"""``python -m processor`` is the ``journey`` command."""

import sys

from processor.cli import main

sys.exit(main())
