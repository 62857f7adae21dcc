"""The ``unseen`` command line (``unseen = "unseen.cli:main"``; also ``python -m unseen``).

``main``: the parser and the exit statuses; one module per subcommand: ``benchmark``, ``list``,
``calibrate``, ``serve``. Subcommands parse arguments and call the library; nothing is computed
here.
"""

from unseen.cli.list import paper_short
from unseen.cli.main import SUBCOMMANDS, build_parser, main

__all__ = ["SUBCOMMANDS", "build_parser", "main", "paper_short"]
