"""Shared fixtures. Heavy fixtures are session-scoped so the suite stays fast."""
