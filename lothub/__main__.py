"""``python -m lothub`` is the ``lothub`` command."""

from lothub.cli import main

raise SystemExit(main())
