"""Sub-command groups of the ``contact-center`` CLI, one module each."""
