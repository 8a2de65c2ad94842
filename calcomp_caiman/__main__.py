"""``python -m calcomp_caiman`` is the ``calcomp`` command."""

from calcomp_caiman.apps.cli import main

raise SystemExit(main())
