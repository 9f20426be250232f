"""The tags dnnprobe puts on its MLflow runs: one home for the names that runs write and lookups read."""

SUMMARY_TAG = "dnnprobe.summary_sha256"  # on a probe run: the sha256 of the summary.json it wrote
# on a probe run whose C (probe.C: auto or a list) was chosen at an end of its grid: attribute, layer, C, folds
C_EDGE_TAG = "dnnprobe.C_at_grid_edge"

# Every run dnnprobe starts names the process that owns it, so that a later dnnprobe can tell a run
# whose process was killed (SIGKILL, the OOM killer) from one still in progress.
HOST_TAG = "dnnprobe.host"
PID_TAG = "dnnprobe.pid"
PROCESS_START_TAG = "dnnprobe.process_start"
ORPHANED_TAG = "dnnprobe.orphaned"

# On a run a `dnnprobe cluster` job made: the sweep's id (its experiment's name is dvc_exp_name), so that a
# job killed or failing after its probe, whose experiment never came home, can end its runs as KILLED.
SWEEP_TAG = "dnnprobe.cluster_sweep"
SWEEP_VARIABLE = "DNNPROBE_CLUSTER_SWEEP"  # set by the job for `dvc exp run`; run_tags copies it to SWEEP_TAG
