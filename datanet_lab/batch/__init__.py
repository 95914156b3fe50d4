"""The papermill batch: which notebooks a run executes, in order, into one run directory."""
