"""`python -m gateway` runs the operators' CLI."""

from gateway.cli import main

raise SystemExit(main())
