"""The report and budgets CLI: schema, formats, failures on bad input, budgets that bite,
Dask and process-pool runs identical to a serial run."""

from __future__ import annotations

import json
import math

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
    "cond_err_max",
    "cond_err_p999",
    "cond_err_median",
    "cond_err_mean_signed",
    "row_rel_max",
    "row_rel_median",
    "rel_fro",
    "bf16_out_max_ulp",
    "bf16_out_incorrect_frac",
    "lse_err_max",
    "bound_cond_max",
    "bound_cond_median",
    "bound_ratio",
    "n_violations",
    "n_uncovered",
    "max_ulp_fp32",
    "p999_ulp_fp32",
    "median_ulp_fp32",
    "max_ulp_bf16",
    "mean_signed_ulp_fp32",
    "bound_ulp_fp32",
    "hazards",
}
HAZARD_KEYS = {"zero", "subnormal", "sign_borrow", "underflow", "overflow", "nonfinite", "clamp"}


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
        assert set(rec["hazards"]) == HAZARD_KEYS
        assert rec["bound_ratio"] <= 1.0  # the measured error stays within the a priori bound
        assert rec["n_violations"] == 0
        # the bound on the same scale as the headline error
        assert rec["cond_err_max"] <= rec["bound_cond_max"]
        assert rec["cond_err_median"] <= rec["bound_cond_median"]
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
    header = next(line for line in out.splitlines() if line.startswith("variant"))
    assert header.split()[3:5] == ["cond", "max"]  # the table leads with the condition-aware error
    assert "bound max" in header and "BF16 wrong" in header


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


def test_sweep_with_also_matches_separate_evaluations():
    """The compensation sweep's one shared evaluation (one workload, one reference) gives the
    records of separate ``evaluate_case`` calls, field for field; a bad ``also`` is named."""
    from amla_numerics.analysis.grid import Case, evaluate_case

    case = Case(16, 256, "mla", 3, 2, 64, c=1.25)
    shared = evaluate_case(case, ["amla"], cs=(1.0, 1.443), also=["amla_nocomp", "fa_fp32"])
    apart = evaluate_case(case, ["amla"], cs=(1.0, 1.443)) + evaluate_case(
        case, ["amla_nocomp", "fa_fp32"]
    )
    assert _dicts(shared) == _dicts(apart)
    assert [(r.variant, r.c) for r in shared] == [
        ("amla", 1.0),
        ("amla", 1.443),
        ("amla_nocomp", 1.25),
        ("fa_fp32", 1.25),
    ]
    # without cs: the variants, then the also ones, each at case.c
    assert _dicts(evaluate_case(case, ["amla"], also=["fa_fp32"])) == _dicts(
        evaluate_case(case, ["amla"]) + evaluate_case(case, ["fa_fp32"])
    )
    with pytest.raises(ValueError, match="also"):
        evaluate_case(case, ["amla"], also=["nonesuch"])


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


# ------------------------------------------------------------------ verdicts

TINY = [
    "--head-dims",
    "16",
    "--kv-lens",
    "256",
    "--block-n",
    "64",
    "--rows",
    "2",
    "--jobs",
    "1",
    "--no-throughput",
]


def test_garbage_elements_are_excluded_alone_and_fail_only_with_fail_on_hazard(capsys):
    argv = ["report", *TINY, "--workloads", "adversarial", "--variants", "amla,amla_guarded"]
    assert main([*argv, "--format", "json"]) == 0
    recs = {r["variant"]: r for r in json.loads(capsys.readouterr().out)["records"]}
    amla, guarded = recs["amla"], recs["amla_guarded"]
    # the zero V column's garbage: exactly its elements excluded, the rest still checked
    assert amla["hazards"]["zero"] > 0 and amla["n_uncovered"] == 2
    assert amla["n_covered"] == 2 * 16 - 2 and amla["n_violations"] == 0
    assert guarded["n_uncovered"] == 0 and guarded["n_violations"] == 0
    assert guarded["hazards"]["zero"] > 0  # detected and repaired
    assert main([*argv, "--fail-on-hazard"]) == 1
    assert "amla d=16" in capsys.readouterr().out


def test_a_covered_element_above_its_bound_fails_the_report(monkeypatch, capsys):
    from amla_numerics.analysis import grid

    real = grid.elementwise_bound
    monkeypatch.setattr(grid, "elementwise_bound", lambda *a, **k: real(*a, **k) * 1e-6)
    assert main(["report", *TINY, "--workloads", "random", "--variants", "fa_fp32"]) == 1
    out = capsys.readouterr().out
    assert "VIOLATED" in out and "above the bound" in out


def test_fp32_overflow_of_o_is_counted_and_fails(tmp_path, capsys):
    import numpy as np

    path = tmp_path / "huge.npz"
    v = np.ones((64, 4))
    v[:, 0] = 3e37  # equal weights: O = sum over a block of 3e37 overflows FP32
    np.savez(path, q=np.zeros((2, 8)), k=np.zeros((64, 8)), v=v)
    argv = ["report", *TINY, "--variants", "fa_fp32,lazy", "--inputs", str(path)]
    assert main([*argv, "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert {r["workload"] for r in doc["records"]} == {"huge"}  # --inputs alone
    for rec in doc["records"]:
        assert rec["hazards"]["overflow"] == 2 and rec["n_violations"] == 2
        assert rec["n_nonfinite"] == 2 and rec["cond_err_max"] is None  # inf in strict JSON


def test_seeds_give_summaries_with_intervals_and_one_row_per_case(capsys):
    argv = ["report", *TINY, "--workloads", "random", "--variants", "fa_fp32,amla"]
    assert main([*argv, "--seeds", "0,1,2", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "Student t" in doc["header"]["intervals"]
    summ = {s["variant"]: s for s in doc["summaries"]}
    recs = doc["records"]
    for variant, s in summ.items():
        vals = [r["rel_fro"] for r in recs if r["variant"] == variant]
        assert s["n_seeds"] == 3 and s["seeds"] == [0, 1, 2]
        assert s["rel_fro_mean"] == pytest.approx(sum(vals) / 3)
        lo, hi = s["rel_fro_ci95"]
        assert lo < s["rel_fro_mean"] < hi
    assert summ["fa_fp32"]["rel_fro_ratio_fa_fp32"] == pytest.approx(1.0)
    base = {r["seed"]: r["rel_fro"] for r in recs if r["variant"] == "fa_fp32"}
    ratios = [r["rel_fro"] / base[r["seed"]] for r in recs if r["variant"] == "amla"]
    geo = math.exp(sum(math.log(x) for x in ratios) / 3)
    assert summ["amla"]["rel_fro_ratio_fa_fp32"] == pytest.approx(geo)
    assert main([*argv, "--seeds", "0,1,2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("fa_fp32", "amla"))]
    assert len(rows) == 2 and all("[" in line for line in rows)


def test_mean_ci95_is_the_student_t_interval():
    from amla_numerics.analysis.stats import mean_ci95

    # n = 2: t_{0.975, 1} = 12.7062; values 0, 2: mean 1, standard error 1
    m, (lo, hi) = mean_ci95([0.0, 2.0])
    assert m == 1.0 and lo == pytest.approx(1 - 12.7062, abs=1e-3)
    assert hi == pytest.approx(1 + 12.7062, abs=1e-3)
    m, ci = mean_ci95([3.0])
    assert m == 3.0 and all(math.isnan(x) for x in ci)


def test_policy_option_and_masked_workloads(capsys):
    argv = ["report", *TINY, "--variants", "fa_fp32,amla_guarded", "--format", "json"]
    assert main([*argv, "--workloads", "causal,padding,alibi", "--policy", "exact"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["header"]["policy"] == "exact"
    for rec in doc["records"]:
        assert rec["policy"] == "exact" and rec["n_violations"] == 0
        assert rec["cond_err_max"] < 16  # the exact policy: a few float64-sized errors
    assert main([*argv, "--workloads", "padding"]) == 0
    recs = json.loads(capsys.readouterr().out)["records"]
    assert all(r["n_nonfinite"] == 0 and r["cond_err_max"] < 2**18 for r in recs)
    assert main(["report", *TINY, "--policy", "fast"]) == 2
    assert "--policy" in capsys.readouterr().err


def test_report_plots_are_written(tmp_path):
    from amla_numerics.analysis.grid import Case
    from amla_numerics.analysis.outputs import write_outputs
    from amla_numerics.analysis.report import ReportConfig, build_report

    cfg = ReportConfig(
        head_dims=(16, 32),
        kv_lens=(256,),
        block_n=64,
        variants=("fa_fp32", "amla", "amla_nocomp"),
        workloads=("random",),
        seeds=(0, 1),
        rows=2,
        c_sweep=(1.0, 1.5),
        c_sweep_case=Case(16, 256, "mla", 0, 2, 64),
        c_sweep_seeds=(0, 1),
        trace_case=Case(16, 256, "drift", 0, 2, 64),
        scatter_case=Case(16, 256, "mla", 0, 2, 64),
    )
    rep = build_report(cfg, throughput=False)
    names = {p.name for p in write_outputs(rep, tmp_path)}
    assert {
        "cond_error_distribution.png",
        "error_scatter.png",
        "error_vs_c.png",
        "error_vs_head_dim_random.png",
        "block_trace.png",
    } <= names
    assert len(rep.c_sweep) == 2 * (2 + 2)  # seeds x (c values + two references)
