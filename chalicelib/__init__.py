"""Everything the scheduler's Lambdas run, behind the thin wiring in app.py."""
