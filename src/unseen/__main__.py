"""``python -m unseen ...`` is the ``unseen`` command line."""

import sys

from unseen.cli import main

sys.exit(main())
