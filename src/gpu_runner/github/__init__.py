"""GitHub: the API client, runners, comments and workflow commands."""
