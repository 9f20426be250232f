"""The only code every stage runs: errors, atomic outputs, hashing, the params.yaml schema and the
stage-command wrapper. dvc.yaml lists this folder as a dependency of every stage."""
