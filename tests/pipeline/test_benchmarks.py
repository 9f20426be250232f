"""The benchmark scripts keep working: each runs at tiny scale and ends with its contract line."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import REPO


def run(script: str, *args: str, cwd, whole: bool = False) -> str:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout if whole else result.stdout.strip().splitlines()[-1]


def test_bench_probe_tiny(tmp_path):
    from helpers import synthetic

    act = synthetic(tmp_path, n=60, layers=["fc1", "conv5_relu"])
    last = run("bench_probe.py", "--layers", "fc1,conv5_relu", "--n", "60", "--pca", "5", "--cv", "3",
               "--data", str(act), cwd=tmp_path)
    match = re.fullmatch(r"ratio=([\d.]+) peak_rss_mb=(\d+) max_fold_diff_samples=(\d+)", last)
    assert match, last
    assert float(match.group(1)) > 0 and int(match.group(2)) > 0
    assert int(match.group(3)) <= 1  # dnnprobe equals the exact reference to within one test sample per fold


def test_bench_extract_tiny(tmp_path):
    last = run("bench_extract.py", "--n", "8", "--size", "64", "--batch-size", "4", "--workers", "0",
               "--data-dir", str(tmp_path), cwd=tmp_path)
    match = re.fullmatch(r"ratio=([\d.]+) peak_rss_mb=(\d+)", last)
    assert match, last
    assert float(match.group(1)) > 0


def test_bench_vit_tokens_tiny(tmp_path):
    out = run("bench_vit_tokens.py", "--n", "2", "--size", "64", "--batch-size", "2", "--workers", "0",
              "--data-dir", str(tmp_path), cwd=tmp_path, whole=True)
    sizes = {tokens: float(mb) for tokens, mb in re.findall(r"extract, tokens (\w+) .* file ([\d.]+) MB", out)}
    assert sizes["all"] >= 2 * 12 * 197 * 768 * 4 / 1e6 > 2 * 12 * 768 * 4 / 1e6 * 100 > sizes["cls"], out
    match = re.fullmatch(r"ratio_cls=([\d.]+) ratio_all=([\d.]+)", out.strip().splitlines()[-1])
    assert match and float(match.group(1)) > 0 and float(match.group(2)) > 0, out


def test_bench_pipeline_vit_tokens_all_refused_without_disk_room(tmp_path):
    """tokens all on a disk too small (free space faked at 5 MB): one line naming the bytes needed and free,
    before any image is written."""
    script = REPO / "benchmarks" / "bench_pipeline.py"
    data = tmp_path / "data"
    args = ["--network", "vit_b_16", "--tokens", "all", "--n", "8", "--size", "64", "--workers", "0",
            "--device", "cpu", "--data-dir", str(data)]
    code = ("import collections, runpy, shutil, sys\n"
            "usage = collections.namedtuple('usage', 'total used free')\n"
            "shutil.disk_usage = lambda path: usage(10**9, 10**9 - 5 * 10**6, 5 * 10**6)\n"
            f"sys.path.insert(0, {str(script.parent)!r})\n"
            f"sys.argv = [{str(script)!r}, *{args!r}]\n"
            f"runpy.run_path({str(script)!r}, run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    refusal = (r"bench_pipeline: refused: .*bench\.act\.h5: needs 10\d MB but its disk has 5 MB free "
               r"\(activation file 100\.\d MB \+ Gram file .*\)")
    assert len(lines) == 1 and re.fullmatch(refusal, lines[0]), lines
    assert not list(data.iterdir())  # no image written, no output


def test_profile_extract_tiny(tmp_path):
    out = run("profile_extract.py", "--n", "8", "--size", "64", "--batch-size", "4", "--data-dir", str(tmp_path),
              cwd=tmp_path, whole=True)
    steps = re.findall(r"^(decode|resize|to input|forward|hook copies|write) +[\d.-]+ +[\d.-]+%", out, re.M)
    assert steps == ["decode", "resize", "to input", "forward", "hook copies", "write"]


def test_bench_dtype_tiny(tmp_path):
    last = run("bench_dtype.py", "--pca", "4", "--cv", "3", "--set", "stimuli.demo.n_per_class=9",
               "--set", "extract.layers=[fc1,fc2_relu]", cwd=tmp_path)
    match = re.fullmatch(r"max_fold_diff_samples=(\d+) mean_abs_diff=([\d.]+) size_ratio=([\d.]+)", last)
    assert match, last
    assert float(match.group(3)) < 0.75  # float16 stores the activations in about half the bytes


def test_bench_permutations_tiny(tmp_path):
    from helpers import synthetic

    act = synthetic(tmp_path, n=40, layers=["fc1"])
    last = run("bench_permutations.py", "--layer", "fc1", "--pca", "4", "--cv", "3", "--permutations", "19",
               "--data", str(act), cwd=tmp_path)
    match = re.fullmatch(r"extra_seconds=(-?[\d.]+) p_value=([\d.]+)", last)
    assert match, last
    assert 1 / 20 <= float(match.group(2)) <= 1  # (count + 1) / (permutations + 1)


def test_bench_permutations_memory_tiny(tmp_path):
    last = run("bench_permutations.py", "--memory", "--permutations", "200", "--n", "40", "--pca", "4", cwd=tmp_path)
    assert re.fullmatch(r"P=200 n=40 k=4: measured -?\d+ MiB, estimate \d+ MiB", last), last


def test_bench_tracking_killed_server(tmp_path):
    """A real `mlflow server` stopped mid-run: the probe's one-line error comes within the stages' HTTP bounds."""
    last = run("bench_tracking.py", "--cases", "killed", cwd=tmp_path)
    match = re.fullmatch(r"killed_s=([\d.]+) frozen_s=-", last)
    assert match, last


def test_check_rsatoolbox(tmp_path):
    """rsatoolbox (not a dependency: skipped unless installed) reads the RDM file and agrees with its own RDMs."""
    import pytest

    pytest.importorskip("rsatoolbox")
    last = run("check_rsatoolbox.py", cwd=tmp_path)
    match = re.fullmatch(r"max_abs_diff=([\d.e+-]+) measure=\w+", last)
    assert match and float(match.group(1)) < 1e-5, last


def test_bench_reprobe_tiny(tmp_path):
    from helpers import synthetic

    act = synthetic(tmp_path, n=40, layers=["fc1", "fc2"])
    out = run("bench_reprobe.py", "--n", "40", "--layers", "fc1,fc2", "--base-pca", "5", "--pca", "3",
              "--data", str(act), cwd=tmp_path, whole=True)
    # the cached activations and Gram matrices are reused (params: the file's own check, seconds)
    assert "stages run: check, params, probe, report\n" in out, out
    assert re.search(r"^repro_seconds=[\d.]+ reprobe_seconds=[\d.]+$", out, re.MULTILINE), out


def test_bench_scale_tiny(tmp_path):
    out = run("bench_scale.py", "--n", "300", "--units", "120,400", "--pca", "5", "--cv", "3",
              "--workdir", str(tmp_path), "--plot", str(tmp_path / "scale.png"), cwd=tmp_path, whole=True)
    lines = re.findall(r"^n=300 layer=fc units=(\d+) route=(\w+) gram_s=[\d.]+ gram_peak_gib=[\d.]+ "
                       r"probe_s=[\d.]+ probe_peak_gib=[\d.]+ accuracy=[\d.]+ generate_s=[\d.]+$", out, re.MULTILINE)
    assert lines == [("120", "covariance"), ("400", "gram")], out  # the smaller matrix for each width
    assert (tmp_path / "scale.png").stat().st_size > 0


def test_bench_design_tiny(tmp_path):
    from helpers import synthetic

    act = synthetic(tmp_path, n=60, layers=["fc1"])
    last = run("bench_design.py", "--layers", "fc1", "--n", "60", "--pca", "5", "--cv", "3", "--data", str(act),
               cwd=tmp_path)
    match = re.fullmatch(r"labels5_ratio=([\d.]+) c_auto_ratio=([\d.]+)", last)
    assert match, last
    assert float(match.group(1)) > 0 and float(match.group(2)) > 0


def test_gpu_check_runs_every_step_at_tiny_scale_records_each_and_cleans_up(tmp_path):
    """benchmarks/gpu_check.sh on the CPU (GPU_CHECK_SCALE=tiny): every step's exit code and time are
    recorded; a step past its limit (here nsd_fc, given 1 s) is stopped with SIGINT, recorded as rc=124,
    and the next one still runs; the CPU-versus-torch comparison of products and folds is exact; nothing
    is left in the work folder. The pipeline step is bench_pipeline.py's own test."""
    import json
    import os

    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "WORKDIR": str(work), "GPU_CHECK_SCALE": "tiny",
           "GPU_CHECK_LIMITS": "120 60 60 60 1 60", "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (out / "steps.txt").read_text()
    steps = re.findall(r"^(\w+) +rc=(\d+) +seconds=[\d.]+ limit=\d+$", text, re.M)
    assert steps == [("pipeline", "0"), ("check_device", "0"), ("compare_cov", "0"), ("compare_gram", "0"),
                     ("nsd_fc", "124"), ("nsd_conv5", "0")], text
    assert "1 step(s) failed" in text
    points = [json.loads(line) for line in (out / "scale.jsonl").read_text().splitlines()]
    compared = [point for point in points if point["device_diff"] is not None]
    assert [point["route"] for point in compared] == ["covariance", "gram"]
    assert all(point["device_diff"] == 0 and point["products_rel_diff"] < 1e-4 for point in compared)
    # the pipeline step is bench_pipeline.py at tiny scale: its stages' times, 14 layers probed, the total
    pipeline = (out / "log.txt").read_text().split("===== pipeline ")[1].split("===== check_device")[0]
    assert re.search(r"^extract +[\d.]+ s$", pipeline, re.M) and re.search(r"^probe +[\d.]+ s$", pipeline, re.M)
    assert len(re.findall(r"mean fold accuracy", pipeline)) == 14
    assert re.search(r"^n=24 size=64 total_s=[\d.]+$", pipeline, re.M), pipeline
    assert not work.exists()


def test_gpu_check_vit_steps_at_tiny_scale(tmp_path):
    """The steps outside the default set, chosen with GPU_CHECK_STEPS (vit_all added by GPU_CHECK_VIT_ALL=1), at
    tiny scale on the CPU: each exits 0; pipeline_direct writes with O_DIRECT and says so; the ViT-B/16 steps end
    with a total_s line naming network and tokens, and the tokens-all step's file (every token of 12 blocks) is
    estimated before any work, from above, and measured; nothing is left behind. (vit_mean is vit_cls with
    another --tokens, which the extract tests cover.)"""
    import os

    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "WORKDIR": str(work), "GPU_CHECK_SCALE": "tiny",
           "GPU_CHECK_STEPS": "pipeline_direct vit_cls", "GPU_CHECK_VIT_ALL": "1",
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gpu_check: steps pipeline_direct vit_cls vit_all; limits 240 s in all\n" in result.stdout
    text = (out / "steps.txt").read_text()
    steps = re.findall(r"^(\w+) +rc=(\d+) +seconds=[\d.]+ limit=\d+$", text, re.M)
    assert steps == [("pipeline_direct", "0"), ("vit_cls", "0"), ("vit_all", "0")], text
    assert "0 step(s) failed" in text
    log = (out / "log.txt").read_text()
    summaries = re.findall(r"^n=8 size=64 network=vit_b_16 tokens=(\w+) total_s=[\d.]+$", log, re.M)
    assert summaries == ["cls", "all"], log
    assert len(re.findall(r"^  block\d+ +\w+ +mean fold accuracy", log, re.M)) == 2 * 12, log
    assert re.search(r"^extract: .* GB written by O_DIRECT\n(.*\n)*n=24 size=64 direct_io=on total_s=[\d.]+$", log, re.M), log
    estimated = re.search(r"tokens all, float32: activation file ([\d,]+) B .*, Gram file ([\d,]+) B .* estimated", log)
    measured = re.findall(r"^files measured: activation file ([\d,]+) B .*, Gram file ([\d,]+) B ", log, re.M)
    assert estimated and len(measured) == 2, log
    act_estimate, act_size = int(estimated.group(1).replace(",", "")), int(measured[1][0].replace(",", ""))
    assert 8 * 12 * 197 * 768 * 4 <= act_size <= act_estimate < act_size + 100_000, log  # every token, from above
    assert int(measured[0][0].replace(",", "")) < 8 * 12 * 768 * 4 * 100  # cls: one token per block
    assert not work.exists()


def test_gpu_check_refuses_vit_all_without_its_switch_and_unknown_steps(tmp_path):
    """vit_all (36 GB on disk) runs only with GPU_CHECK_VIT_ALL=1; a step name it does not know, or limits
    that do not match the steps, stop the script before any step (exit 2, one line)."""
    import os

    for steps, limits, message in [
        ("vit_cls vit_all", "", "vit_all writes a 36 GB activation file: set GPU_CHECK_VIT_ALL=1"),
        ("vit_cls pipline", "", "unknown step pipline in GPU_CHECK_STEPS"),
        ("vit_cls vit_mean", "60", "GPU_CHECK_LIMITS has 1 limits for 2 steps"),
    ]:
        out = tmp_path / "out"
        env = {**os.environ, "OUT": str(out), "WORKDIR": str(tmp_path / "work"), "GPU_CHECK_SCALE": "tiny",
               "GPU_CHECK_STEPS": steps, "GPU_CHECK_LIMITS": limits, "GPU_CHECK_VIT_ALL": "0"}
        result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr, result.stdout + result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and message in (out / "steps.txt").read_text()
        assert not (out / "log.txt").read_text()  # no step ran
