"""Identity and tenancy: organizations, users, roles, API keys, JWT sessions, audit."""
