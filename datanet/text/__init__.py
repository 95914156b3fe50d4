"""Text Datanets: sources (installed docstrings, the user's files), text validation, planted
behaviours and the versioned text Datanet."""
