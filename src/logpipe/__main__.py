"""``python -m logpipe``: the same as the ``logpipe`` command."""

from logpipe._entry import main

raise SystemExit(main())
