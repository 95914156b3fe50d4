"""Experiments on Datanets: method comparisons against retraining (tabular, MLP, text, generation),
the sybil study and Datanets grown in rounds."""
