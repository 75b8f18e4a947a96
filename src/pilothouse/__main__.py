"""Allow ``python -m pilothouse``."""

from pilothouse.entry import main

main()
