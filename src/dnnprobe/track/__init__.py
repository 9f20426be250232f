"""MLflow tracking: the store, the probe run, its name and what it records."""
