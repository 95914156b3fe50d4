"""Text Datanets: sources (installed docstrings, the user's files), text validation, planted
behaviours and the versioned text Datanet."""
# The LM Datanet (documents for a causal LM, planted behaviours, prompts): datanet.text.lm_datanet,
# imported by name like the other text modules.
