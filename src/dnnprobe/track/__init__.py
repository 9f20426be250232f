"""MLflow tracking: the store (store, failures), the probe run (runs, naming, dataset, owners, tags) and
finding it again for the report (lookup)."""
