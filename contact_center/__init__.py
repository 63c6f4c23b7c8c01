"""The contact-center application: settings, CLI, web app, workers and wiring."""
