"""Natural-language understanding: intents from flow examples and slot parsers."""
