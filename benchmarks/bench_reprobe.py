"""Re-probe at scale: `dvc exp run -S pca=50` once the activations and Gram matrices exist.

Builds a throwaway DVC repository (a copy of this one) whose stimulus, network and extraction
outputs are BOLD5000-shaped synthetic activations (benchmarks/make_synthetic.py) committed with
`dvc commit` instead of computed, runs `dvc repro` (gram, probe, report: the first probe at scale,
timed), then `dvc exp run -S pca=50` (timed: only check, probe and report rerun). Ends with one line
``repro_seconds=<x> reprobe_seconds=<y>``. The activation file is hard-linked, not copied.

    python benchmarks/bench_reprobe.py --n 4916
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import REPO
from dnnprobe.stimuli.table import StimulusTable


def run(repo: Path, *command: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    started = time.perf_counter()
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout + result.stderr


def build_repo(repo: Path, act: Path, table: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        output = name.startswith(("data/", "models/", "reports/")) and not name.startswith(("data/external/",
                                                                                            "models/external/"))
        if not output and name != "dvc.lock" and (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    # One tiny real image per stimulus (the activations are synthetic): the check stage decodes each once.
    from PIL import Image

    stimuli = StimulusTable.read(table)
    for i, stim_id in enumerate(stimuli.stim_ids):
        (repo / "data" / "images" / stim_id).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i % 256, 0, 0)).save(repo / "data" / "images" / stim_id, format="JPEG")
    stimuli.header["path"] = "images"
    stimuli.write(repo / "data" / "stimuli.stim.csv")
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models" / "network.pt").write_bytes(b"synthetic activations: no network\n")
    (repo / "models" / "network.pt.json").write_text("{}\n")
    run(repo, "git", "init", "-q")
    # Record the upstream stages as done (their outputs are the synthetic files) before git sees
    # them: `dvc commit` git-ignores its outputs, and refuses outputs that git already tracks.
    run(repo, "dvc", "commit", "--force", "stimuli", "network")
    run(repo, "git", "-c", "user.name=b", "-c", "user.email=b@b", "add", "-A")
    run(repo, "git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench")


def commit_extraction(repo: Path, act: Path) -> None:
    """The check stage's real image list of the placeholder images, then extraction recorded as done
    (before git sees the activation file: `dvc commit` refuses an output that git tracks)."""
    run(repo, "dvc", "repro", "--single-item", "check")
    os.link(act, repo / "data" / "activations.act.h5")
    run(repo, "dvc", "commit", "--force", "extract")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4916)
    parser.add_argument("--pca", type=int, default=50, help="the new pca of the experiment")
    parser.add_argument("--data", type=Path, help="existing synthetic .act.h5 (default: generate)")
    parser.add_argument("--layers", default="", help="comma-separated subset of the 14 layers (tests)")
    parser.add_argument("--base-pca", type=int, help="pca of the first run (default: params.yaml's; tests)")
    args = parser.parse_args(argv)
    from make_synthetic import benchmark_data

    layers = args.layers.split(",") if args.layers else None
    act, table = benchmark_data(args.n, layers, args.data)
    with tempfile.TemporaryDirectory(dir=act.parent) as folder:
        repo = Path(folder)
        build_repo(repo, act, table)
        params = yaml.safe_load((repo / "params.yaml").read_text())
        if layers or args.base_pca:
            params["extract"]["layers"] = layers or params["extract"]["layers"]
            params["pca"] = args.base_pca or params["pca"]
            (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            run(repo, "git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qam", "params")
        commit_extraction(repo, act)
        repro, _ = run(repo, "dvc", "repro")
        run(repo, "git", "-c", "user.name=b", "-c", "user.email=b@b", "add", "-A")
        run(repo, "git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "baseline")
        reprobe, out = run(repo, "dvc", "exp", "run", "-S", f"pca={args.pca}")
        ran = sorted({line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")})
    print(f"machine: {platform.node()} {platform.machine()}; {act.name}; n={args.n}")
    print(f"dvc repro (gram, probe, report): {repro:.1f} s")
    print(f"dvc exp run -S pca={args.pca}: {reprobe:.1f} s, stages run: {', '.join(ran)}")
    print(f"repro_seconds={repro:.1f} reprobe_seconds={reprobe:.1f}")


if __name__ == "__main__":
    main()
