"""``python -m pixelfast`` runs the command line."""

from pixelfast.cli import main

raise SystemExit(main())
