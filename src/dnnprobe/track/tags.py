"""The tags dnnprobe puts on its MLflow runs: one home for the names that runs write and lookups read."""

SUMMARY_TAG = "dnnprobe.summary_sha256"  # on a probe run: the sha256 of the summary.json it wrote

# Every run dnnprobe starts names the process that owns it, so that a later dnnprobe can tell a run
# whose process was killed (SIGKILL, the OOM killer) from one still in progress.
HOST_TAG = "dnnprobe.host"
PID_TAG = "dnnprobe.pid"
PROCESS_START_TAG = "dnnprobe.process_start"
ORPHANED_TAG = "dnnprobe.orphaned"
