"""`python -m vacelive ...` is the `vacelive` command."""
from vacelive.bridge.cli import main

raise SystemExit(main())
