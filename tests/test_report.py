"""The report and budgets CLI: schema, formats, failures on bad input, budgets that bite,
Dask and process-pool runs identical to a serial run."""

from __future__ import annotations

import json

import pytest

from amla_numerics.analysis.grid import expand_grid, run_grid
from amla_numerics.cli import main

SMALL = [
    "--head-dims",
    "32,64",
    "--kv-lens",
    "384",
    "--block-n",
    "128",
    "--rows",
    "2",
    "--workloads",
    "random,drift",
    "--variants",
    "fa_fp32,amla,lazy",
    "--jobs",
    "1",
]

RECORD_KEYS = {
    "head_dim",
    "kv_len",
    "variant",
    "workload",
    "seed",
    "max_ulp_fp32",
    "p999_ulp_fp32",
    "median_ulp_fp32",
    "max_ulp_bf16",
    "mean_signed_ulp_fp32",
    "rel_fro",
    "bound_ulp_fp32",
    "bound_ratio",
    "hazards",
}


def test_report_json_has_the_documented_schema(capsys):
    assert main(["report", *SMALL, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    header = doc["header"]
    assert {"seeds", "libraries", "reference", "command"} <= set(header)
    assert header["libraries"]["numpy"] and header["reference"]["dps"] >= 30
    assert header["reference"]["certified_ulp_fp32"] == 1e-3
    assert len(doc["records"]) == 2 * 2 * 3  # head dims x workloads x variants
    for rec in doc["records"]:
        assert RECORD_KEYS <= set(rec)
        assert rec["bound_ratio"] <= 1.0  # the measured error stays within the a priori bound
    lazy = [r for r in doc["records"] if r["variant"] == "lazy"]
    assert all(0.0 <= r["rescale_rate"] <= 1.0 for r in lazy)
    tp = {t["variant"]: t for t in doc["throughput"]}
    if tp:  # the pipeline model joins one row per variant
        assert set(tp) == {"fa_fp32", "amla", "lazy"}
        assert tp["amla"]["tflops"] > 0 and tp["lazy"]["rescale_prob"] is not None


def test_report_table_has_one_table_per_head_dim(capsys):
    assert main(["report", *SMALL, "--no-throughput"]) == 0
    out = capsys.readouterr().out
    assert "head dim 32\n" in out and "head dim 64\n" in out
    assert "meas/bound" in out


def test_report_writes_files(tmp_path, capsys):
    assert main(["report", *SMALL, "--no-throughput", "--no-plots", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["records"] and (tmp_path / "report.md").read_text().startswith(
        "# amla-numerics report"
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["report", "--variants", "fa_fp64"], "unknown name"),
        (["report", "--workloads", "gaussian"], "unknown name"),
        (["report", "--head-dims", "0,64"], "--head-dims"),
        (["report", "--head-dims", "sixty"], "--head-dims"),
        (["report", "--block-n", "0"], "--block-n"),
        (["report", "--out", "/proc/amla-report"], "not writable"),
        (["frobnicate"], "invalid choice"),
        (["check-budgets", "--budgets", "/nonexistent/budgets.toml"], "cannot read"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


# budgets: tests/test_budgets.py


def _dicts(records):
    return [json.dumps(r.to_dict(), sort_keys=True, default=str) for r in records]


def test_process_pool_and_dask_match_a_serial_run():
    cases = expand_grid(
        head_dims=[16], kv_lens=[200, 300], workloads=["random"], rows=2, block_n=64
    )
    serial = run_grid(cases, ["fa_fp32", "amla"])
    assert _dicts(run_grid(cases, ["fa_fp32", "amla"], jobs=2)) == _dicts(serial)
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        dask = run_grid(cases, ["fa_fp32", "amla"], scheduler=cluster.scheduler_address)
    assert _dicts(dask) == _dicts(serial)


def test_report_measures_user_arrays(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(3)
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        q=rng.standard_normal((2, 16)),
        k=rng.standard_normal((300, 16)),
        v=rng.standard_normal((300, 8)),
        scale=0.25,
    )
    argv = [
        "report",
        "--head-dims",
        "16",
        "--kv-lens",
        "128",
        "--workloads",
        "random",
        "--rows",
        "2",
        "--block-n",
        "128",
        "--variants",
        "amla",
        "--no-throughput",
        "--format",
        "json",
        "--inputs",
        str(path),
    ]
    assert main(argv) == 0
    recs = json.loads(capsys.readouterr().out)["records"]
    mine = [r for r in recs if r["workload"] == "mine"]
    assert len(mine) == 1 and mine[0]["kv_len"] == 300 and mine[0]["bound_ratio"] <= 1
    assert main([*argv[:-1], str(tmp_path / "missing.npz")]) == 2
    assert "cannot read workload file" in capsys.readouterr().err
