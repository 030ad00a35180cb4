"""The trusted judge: what of a notebook runs, the sandbox's raw outputs, the verdicts."""
