"""``python -m evoq_data.cli`` runs ``evoq-data``."""

from evoq_data.cli import main

main()
