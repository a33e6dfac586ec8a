"""``python -m osma_cli`` runs the command-line interface."""

from osma_cli.cli.app import main

main()
