"""Identity: organizations, teams, users, roles, API keys, agent sessions and authentication."""
