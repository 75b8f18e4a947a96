"""MCP: the /mcp endpoint, the upstream servers it aggregates, and tool pinning."""
