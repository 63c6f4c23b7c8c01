"""Domain services: validation (``check_*``) and changes inside the caller's transaction."""
