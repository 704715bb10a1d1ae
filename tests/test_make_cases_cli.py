"""make-cases and compare end to end: golden cases, a kernel's outputs, exit codes 0/1/2,
JSON per dump, budgets for a user's kernel, and the pytest plugin."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest

from amla_numerics import flash
from amla_numerics.cli import main
from amla_numerics.dumps import read_dump, write_dump
from amla_numerics.reference import attention
from amla_numerics.rounding import round_to
from amla_numerics.testing.cases import CASE_WORKLOADS, Shape, make_case

SHAPE = "4x2x1536x64x32"  # 4 heads, s_q 2, 1536 keys, Dk 64, Dv 32: small but every case fits


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    out = tmp_path_factory.mktemp("cases")
    assert (
        main(
            [
                "make-cases",
                "--out",
                str(out),
                "--shapes",
                SHAPE,
                "--format",
                "safetensors",
                "--long",
            ]
        )
        == 0
    )
    return out


def _kernel_outputs(src: Path, dst: Path, variant: str = "amla", fmt: str = "npz") -> Path:
    dst.mkdir(exist_ok=True)
    for f in sorted(src.glob("*.safetensors")):
        d = read_dump(f)
        a = d.arrays
        res = flash.attention(
            a["q"], a["k"], a["v"], variant, scale=float(a["scale"]), mask=a.get("mask")
        )
        arrays = {n: a[n] for n in ("q", "k", "v", "scale", "mask") if n in a}
        arrays["out"] = res.out
        write_dump(dst / f"{f.stem}.{fmt}", arrays, metadata=d.metadata)
    return dst


def test_manifest_lists_every_file_with_its_sha256(cases):
    man = json.loads((cases / "manifest.json").read_text())
    assert [c["workload"] for c in man["cases"]] == list(CASE_WORKLOADS)
    assert set(man["versions"]) >= {"amla_numerics", "numpy", "ml_dtypes", "mpmath"}
    for c in man["cases"]:
        data = (cases / c["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == c["sha256"] == man["files"][c["file"]]
        assert c["reference_max_bound_ulp_fp32"] < 1e-3
        assert c["dtypes"]["q"] == "bfloat16" and c["shapes"]["q"] == [2, 4, 64]


def test_case_references_are_correctly_rounded(cases):
    d = read_dump(cases / "sink_h4_sq2_n1536x64x32.safetensors".replace("x64x32", ""))
    a = d.arrays
    # two rows against an independent mpmath evaluation (the mask applied by hand)
    for t, h in ((0, 0), (1, 3)):
        keep = a["mask"][t, 0]
        exact = attention(
            a["q"][t, h : h + 1],
            a["k"][keep],
            a["v"][keep],
            float(a["scale"]),
            method="mpmath",
            return_mpf=True,
            dps=40,
        )[0]
        for name, fmt in (("ref_fp32", "fp32"), ("ref_bf16", "bf16")):
            want = [float(round_to(x, fmt)) for x in exact]
            assert a[name][t, h].astype(np.float64).tolist() == want
        with mpmath.workprec(200):
            assert all(
                abs(mpmath.mpf(float(r)) - x) <= 1e-3 * 2.0**-24 * abs(x)
                for r, x in zip(a["ref"][t, h], exact, strict=True)
            )


def test_hazard_cases_are_what_they_say():
    s = Shape(2, 1, 2048, 64, 32)
    zc = make_case("zero_vcol", s)
    assert not np.any(zc["v"][:, 0].astype(np.float64))
    mj = make_case("max_jump", s)
    scores = (mj["q"].astype(np.float64) @ mj["k"].astype(np.float64).T) * float(mj["scale"])
    jump = scores[..., 1024 + 7] - scores[..., :1024].max(axis=-1)
    assert np.all(jump / np.log(2) > 30)  # beyond the kernel's -30 binade clamp
    ml = make_case("masked_lead", s)
    assert not ml["mask"][..., :1024].any() and ml["mask"][..., 1024:].all()
    with pytest.raises(ValueError, match="needs kv_len > 1024"):
        make_case("masked_lead", Shape(2, 1, 1024, 64, 32))


def test_compare_exit_codes_and_json(cases, tmp_path, capsys):
    outs = _kernel_outputs(cases, tmp_path / "amla")
    capsys.readouterr()
    assert main(["compare", str(outs), "--format", "json", "--max-cond-err", "1e9"]) == 1
    res = json.loads(capsys.readouterr().out)
    by = {r["case"]: r for r in res}
    assert len(res) == len(list(cases.glob("*.safetensors")))
    for r in res:
        assert r["nearest_variant"] == "amla" and r["bit_match"]["amla"] == 1.0
        assert {"pass", "worst_index", "cond_err_max", "bf16_out_max_ulp", "row_rel_max"} <= set(r)
    # the zero V column: AMLA's add leaves garbage, a measured failure (n_nonfinite or inf)
    zc = by["zero_vcol_h4_sq2_n1536"]
    assert not zc["pass"]
    ok = [n for n, r in by.items() if n != "zero_vcol_h4_sq2_n1536"]
    ok_args = ["--variant", "amla", "--max-cond-err", "1e9"]
    assert main(["compare", *(str(outs / f"{n}.npz") for n in ok), *ok_args]) == 0
    capsys.readouterr()
    # judged against the default fa_fp32 schedule, AMLA's clamp on max_jump is a failure
    assert main(["compare", str(outs / "max_jump_h4_sq2_n1536.npz")]) == 1
    assert "max_jump_h4_sq2_n1536: an element's error is" in capsys.readouterr().err
    capsys.readouterr()
    tight = str(outs / "mla_h4_sq2_n1536.npz")
    assert main(["compare", tight, "--max-cond-err", "1", "--no-bit-match"]) == 1
    err = capsys.readouterr().err
    assert "OVER: kernel mla_h4_sq2_n1536 cond_err_max measured" in err and "worst index" in err


def test_compare_budget_file_for_a_users_kernel(cases, tmp_path, capsys):
    outs = _kernel_outputs(cases, tmp_path / "fa", variant="fa_fp32", fmt="safetensors")
    budget = tmp_path / "b.toml"
    budget.write_text(
        "[kernels.mykernel]\ncond_err_max = 1e9\nbf16_out_max_ulp = 1e6\n"
        "[[kernels.mykernel.cases]]\nmatch = 'sink_*'\ncond_err_max = 0.5\n"
    )
    args = ["compare", str(outs), "--budget", str(budget), "--kernel", "mykernel"]
    assert main([*args, "--no-bit-match"]) == 1
    err = capsys.readouterr().err
    assert "OVER: mykernel sink_h4_sq2_n1536 cond_err_max measured" in err
    assert "> budget 0.5" in err and err.count("OVER:") == 1
    assert main([*args[:2], "--budget", str(budget), "--kernel", "theirs"]) == 2
    assert "no kernel 'theirs'" in capsys.readouterr().err
    # a budget that covers only the sink case: the others are reported, and fail if strict
    partial = tmp_path / "p.toml"
    partial.write_text("[[kernels.k.cases]]\nmatch = 'sink_*'\ncond_err_max = 1e9\n")
    args = ["compare", str(outs), "--budget", str(partial), "--kernel", "k", "--no-bit-match"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "note: no entry of budget 'k' covers case 'mla_h4_sq2_n1536'" in err
    assert "covers case 'sink_h4_sq2_n1536'" not in err
    assert main([*args, "--strict"]) == 1
    err = capsys.readouterr().err
    assert "OVER: k mla_h4_sq2_n1536 budget_uncovered measured 1 > budget 0" in err
    assert "OVER: k sink_h4_sq2_n1536" not in err
    # named standards on the same dumps (the emulated fa_fp32 passes its own standards)
    for std in ("flash-attn", "cann-l2", "bound"):
        assert main(["compare", str(outs), "--no-bit-match", "--standard", std]) == 0, std
    capsys.readouterr()
    assert main(["compare", str(outs), "--standard", "budget"]) == 2
    assert "--standard budget needs --budget" in capsys.readouterr().err
    assert main(["compare", str(outs), "--standard", "iso"]) == 2
    assert "unknown --standard 'iso'" in capsys.readouterr().err


def test_compare_bad_files_exit_2_with_one_sentence(cases, tmp_path, capsys):
    src = cases / "mla_h4_sq2_n1536.safetensors"
    a = dict(read_dump(src).arrays)
    a.pop("ref")
    good = write_dump(tmp_path / "good.npz", {**a, "out": a["ref_fp32"]})
    data = good.read_bytes()
    bad = {
        "truncated.npz": data[: len(data) // 3],
        "corrupt.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}" + b"x" * 64,
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    write_dump(tmp_path / "noout.npz", a)
    write_dump(tmp_path / "shape.npz", {**a, "out": a["ref_fp32"][:, :, :5]})
    write_dump(
        tmp_path / "nanin.npz", {**a, "q": np.full(a["q"].shape, np.nan), "out": a["ref_fp32"]}
    )
    expect = {
        "truncated.npz": "corrupt or truncated",
        "corrupt.safetensors": "corrupt or truncated",
        "noout.npz": "missing array 'out'",
        "shape.npz": "shapes do not fit: out (2, 4, 5) should be (2, 4, 32)",
        "nanin.npz": "input array 'q' contains NaN or inf",
    }
    for name, needle in expect.items():
        capsys.readouterr()
        assert main(["compare", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and err.count("\n") == 1, (name, err)
    assert main(["compare", str(good), "--budget", "x.toml"]) == 2  # --kernel missing
    assert main(["make-cases", "--out", str(tmp_path), "--workloads", "nope"]) == 2
    assert main(["make-cases", "--out", str(tmp_path), "--shapes", "128x1x100000000"]) == 2
    assert "GiB of memory" in capsys.readouterr().err


def test_pytest_plugin_and_the_docs_example(tmp_path):
    (tmp_path / "budget.toml").write_text(
        "[kernels.k]\ncond_err_max = 2.0\n[[kernels.k.cases]]\nmatch = 'test_loose*'\n"
        "cond_err_max = 1e9\n"
    )
    (tmp_path / "test_kernel.py").write_text(
        "import numpy as np, ml_dtypes\n"
        "from amla_numerics import flash\n"
        "def _case():\n"
        "    rng = np.random.default_rng(0)\n"
        "    q = rng.standard_normal((8, 64)).astype(ml_dtypes.bfloat16)\n"
        "    k = rng.standard_normal((256, 64)).astype(ml_dtypes.bfloat16)\n"
        "    return q, k, k[:, :32]\n"
        "def test_reference_fixture(attention_reference):\n"
        "    q, k, v = _case()\n"
        "    out, lse = attention_reference(q, k, v)\n"
        "    assert out.shape == (8, 32) and lse.shape == (8,)\n"
        "def test_loose_budget(assert_attention):\n"
        "    q, k, v = _case()\n"
        "    assert_attention(flash.attention(q, k, v, 'amla').out, q, k, v)\n"
        "def test_tight_budget(assert_attention):\n"
        "    q, k, v = _case()\n"
        "    assert_attention(flash.attention(q, k, v, 'amla').out, q, k, v)\n"
    )
    r = _pytest_with_plugin(
        tmp_path, "--amla-budget", "budget.toml", "--amla-kernel", "k", "test_kernel.py"
    )
    assert "1 failed, 2 passed" in r.stdout, r.stdout + r.stderr
    assert "test_tight_budget" in r.stdout and "cond_err_max measured" in r.stdout


def test_the_docs_example_test_passes_as_written(tmp_path):
    """docs/testing.md's copyable test, run by pytest with the plugin."""
    doc = (Path(__file__).parents[1] / "docs" / "testing.md").read_text()
    blocks = [b.split("```", 1)[0] for b in doc.split("```python\n")[1:]]
    (example,) = [b for b in blocks if "def test_my_kernel" in b]
    (tmp_path / "test_example.py").write_text(example)
    r = _pytest_with_plugin(tmp_path, "test_example.py")
    assert "1 passed" in r.stdout, r.stdout + r.stderr


def _pytest_with_plugin(cwd, *args: str) -> subprocess.CompletedProcess:
    """pytest in ``cwd`` with only the amla_numerics plugin loaded (and this checkout first)."""
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "amla_numerics.testing.plugin"]
    cmd += ["-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_make_cases_is_atomic_and_refuses_what_cannot_fit(tmp_path, capsys, monkeypatch):
    from amla_numerics.testing import cases as cases_mod

    out = tmp_path / "c"
    calls = []

    def boom(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("disk full")
        return real(*a, **k)

    real = cases_mod.write_dump
    monkeypatch.setattr(cases_mod, "write_dump", boom)
    with pytest.raises(ValueError, match="disk full"):
        cases_mod.make_cases(out, shapes=[Shape(2, 1, 1100, 64, 32)], workloads=["mla", "sink"])
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing left behind
    monkeypatch.undo()
    # every dimension is in the estimate: a huge head dim is refused before any work
    assert main(["make-cases", "--out", str(out), "--shapes", "128x1x4096x4000000x512"]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "GiB of memory" in err and err.count("\n") == 1


def test_default_case_set_is_small_and_exposes_block_bugs():
    from amla_numerics.testing.cases import DEFAULT_PLAN

    total = 0
    for _, s in DEFAULT_PLAN:
        inputs = 2 * s.kv_len * (s.head_dim + s.v_dim) + 2 * s.rows * s.head_dim
        refs = s.rows * s.v_dim * (8 + 4 + 2) + 8 * s.rows
        mask = s.s_q * s.kv_len if s.s_q > 1 else 0
        total += inputs + refs + mask
    assert total <= 100e6
    lens = {s.kv_len for _, s in DEFAULT_PLAN}
    assert any(all(n % b for b in (64, 128, 256, 512)) for n in lens)  # a partial last block
    assert {513, 129} <= lens  # tile boundaries: block + 1
    assert any(s.s_q > 2 for _, s in DEFAULT_PLAN)  # causal rows beyond multi-token decode
