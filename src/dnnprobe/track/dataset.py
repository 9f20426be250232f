"""The stimulus table as an MLflow dataset input: what the runs table's Dataset column shows."""

from __future__ import annotations

import json
import warnings

from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types import ColSpec, Schema


class StimulusTableDataset(MetaDataset):
    """A stimulus table as MLflow sees it: metadata (name, digest, source, schema, profile), no data."""

    def __init__(self, table_path, table_sha256, name, columns, n_rows, label, class_counts):
        with warnings.catch_warnings():  # MLflow warns that a local path fits two source types; both are "local"
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
            source = resolve_dataset_source(str(table_path))
        schema = Schema([ColSpec("string", column) for column in columns])
        super().__init__(source, name=name, digest=table_sha256[:32], schema=schema)
        self._profile = {"num_rows": n_rows, "label": label}
        if class_counts:
            self._profile["class_counts"] = dict(class_counts)

    @property
    def profile(self):
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}
