"""Pipeline steps, one file each; their order is declared in ``routing.pipeline``."""
