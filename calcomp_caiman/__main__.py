"""``python -m calcomp_caiman`` is the ``calcomp`` command."""

from .cli import main

raise SystemExit(main())
