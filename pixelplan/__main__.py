"""``python -m pixelplan`` is the ``pixelplan`` command."""

from pixelplan.cli import main

raise SystemExit(main())
