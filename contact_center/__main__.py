"""``python -m contact_center``: the same as the ``contact-center`` command."""

from contact_center.cli import main

main()
