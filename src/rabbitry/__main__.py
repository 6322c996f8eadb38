"""``python -m rabbitry``."""

from rabbitry.cli import main

main()
