"""``python -m broker``: the same as ``pta-broker`` (see :mod:`broker.cli.main`)."""

import sys

from broker.cli.main import main

sys.exit(main())
