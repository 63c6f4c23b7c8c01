"""End-to-end tests in a real browser (Playwright for Python with Debian's Chromium)."""
