"""Domain services: validation (``check_*``) and changes inside the caller's transaction."""

import crm_core.identity  # noqa: F401  (registers match-key maintenance)
