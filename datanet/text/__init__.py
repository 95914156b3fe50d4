"""Text Datanets: sources (installed docstrings, the user's files) and text validation."""
