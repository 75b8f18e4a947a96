"""The LLM gateway: OpenAI- and Anthropic-compatible endpoints, routing, streaming, accounting."""
