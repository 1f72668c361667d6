"""``python -m api.cli``: the ``afterhours`` command, as the tests and benches start it."""

import sys

from api.cli.main import main

sys.exit(main())
