"""python -m taskctl."""
from taskctl.cli import main

raise SystemExit(main())
