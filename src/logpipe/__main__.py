"""``python -m logpipe``: the same as the ``logpipe`` command."""

from logpipe.cli import main

raise SystemExit(main())
