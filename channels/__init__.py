"""Channel adapters (email, Telegram, web chat, voice): one folder each, registered by name."""
