"""`python -m chalicelib.local`: serve the local stage (see chalicelib.local.server)."""
import sys

from chalicelib.local import server

sys.exit(server.main())
