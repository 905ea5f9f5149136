"""`python -m tfpvae`: the command-line interface."""

from tfpvae.cli import main

raise SystemExit(main())
