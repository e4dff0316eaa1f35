"""voc_rl agents (built from the core in :mod:`voc_rl`); they arrive with the agent issue."""
