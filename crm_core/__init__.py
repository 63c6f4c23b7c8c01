"""The domain and storage of the contact center: models, queries and services.

``crm_core`` knows nothing of channels, HTTP or Redis; the application and the
routing engine call into it.
"""
