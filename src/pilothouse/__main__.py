"""Allow ``python -m pilothouse``."""

from pilothouse.cli.main import main

main()
