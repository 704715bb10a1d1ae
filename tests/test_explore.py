"""The design-space explorer: closed-form limits against exact rounding and the emulator's
saturation/clamp/hazard counts, the grid's validation, the interval, JSON and the CLI."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from amla_numerics import flash
from amla_numerics.cli import main
from amla_numerics.exp2add import exp2_add_bits_hazards
from amla_numerics.explore import Grid, Measure, explore, t_interval
from amla_numerics.explore.limits import (
    AMLA_FOLD_MAX,
    clamp_reach,
    conditions,
    int_add_min_safe,
    overflow_threshold,
    tau_max,
)
from amla_numerics.explore.run import limits_table
from amla_numerics.formats import BF16, E4M3, E5M2
from tests.oracle import oracle_round

_FMT = {"bf16": BF16, "e4m3": E4M3, "e5m2": E5M2}


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "bf16"])
@pytest.mark.parametrize("mode", ["rne", "rna"])
def test_overflow_threshold_matches_exact_rounding(fmt, mode):
    """Just below t: finite; at t: overflows iff inclusive; just above: overflows (oracle)."""
    t, inclusive = overflow_threshold(fmt, mode)
    f = _FMT[fmt]
    tf = Fraction(t)
    eps = tf / 2**20

    def over(x: Fraction) -> bool:
        return not math.isfinite(oracle_round(x, f, mode)) or oracle_round(x, f, mode) > float(
            f.max_finite
        )

    assert not over(tf - eps) and over(tf + eps)
    assert over(tf) == inclusive
    assert t > float(f.max_finite)


def test_tau_max_closed_forms():
    assert tau_max("e4m3", "rne", 256.0, "log2") == pytest.approx(math.log2(464 / 256), rel=1e-15)
    assert tau_max("e4m3", "rne", 1.0, "ln") == pytest.approx(math.log(464), rel=1e-15)
    assert tau_max("e5m2", "rne", 1024.0, "log2") == pytest.approx(math.log2(60), rel=1e-15)
    assert tau_max("e4m3", "rne", 465.0, "log2") is None
    assert AMLA_FOLD_MAX == 1.4140625  # sqrt(2) in BF16, ties away
    c = conditions("amla", None, "e4m3", "rne", 328.0, kv_len=8, v_max=1.0)
    assert c.saturation_free and c.p_max == 328.0 * 1.4140625
    assert not conditions("amla", None, "e4m3", "rne", 329.0, kv_len=8, v_max=1.0).saturation_free
    rows = limits_table(Grid(p_casts=("e4m3", "e5m2"), p_scales=(1.0, 256.0)))
    assert {(r["p_cast"], r["p_scale"], r["tau_units"]) for r in rows} == {
        (f, s, u) for f in ("e4m3", "e5m2") for s in (1.0, 256.0) for u in ("log2", "ln")
    }
    with pytest.raises(ValueError, match="units"):
        tau_max("e4m3", "rne", 1.0, "log10")
    with pytest.raises(ValueError, match="rounding"):
        overflow_threshold("e4m3", "rz")


def _ramp(top: float, n: int = 120):
    """Block 0 (16 keys): scores 0; block 1: a ramp of BF16 scores up to ``top`` (rounded
    down to BF16), all within the threshold: P = exp(g) against the stale max 0."""
    g = np.linspace(0.0, top, n)
    g = np.array([oracle_round(Fraction(float(x)), BF16, "rz") for x in g])
    k = np.zeros((16 + n, 4))
    k[16:, 0] = g
    q = np.zeros((1, 4))
    q[0, 0] = 1.0
    return q, k, np.ones((16 + n, 2)), float(g.max())


@pytest.mark.parametrize(
    ("variant", "fmt", "scale"),
    [
        ("skip_scale", "e4m3", 1.0),
        ("lazy", "e4m3", 256.0),
        ("lazy", "e5m2", 1024.0),
        ("skip_scale", "e5m2", 2.0**13),
    ],
)
def test_limit_inside_has_no_saturation_outside_has(variant, fmt, scale):
    units = "ln" if variant == "skip_scale" else "log2"
    tm = tau_max(fmt, "rne", scale, units)
    to_nats = 1.0 if units == "ln" else math.log(2.0)
    pol = flash.get_policy("ascend").replace(p_cast=fmt, p_cast_rounding="rne", p_scale=scale)
    counts = {}
    for side, tau in (("in", tm - 0.1), ("out", tm + 0.1)):
        q, k, v, _top = _ramp(tau * to_nats * (1 - 1e-6))
        res = flash.attention(
            q, k, v, variant, scale=1.0, block_n=16, tau=tau, policy=pol, trace=True
        )
        assert not res.trace.rescaled.any()  # every growth is within the threshold
        counts[side] = int(res.trace.p_saturate.sum())
        c = conditions(variant, tau, fmt, "rne", scale, kv_len=k.shape[0], v_max=1.0)
        assert c.saturation_free == (side == "in")
        # the count itself: the ramp's elements whose e**g S is beyond the threshold
        t, _ = overflow_threshold(fmt, "rne")
        g = k[16:, 0]
        assert counts[side] == int(np.count_nonzero(np.exp(g) * scale > t)), side
    assert counts["in"] == 0 < counts["out"]


def test_amla_fold_limit_on_the_scale():
    """AMLA's A = P r^ <= 1.4140625: S = 320 never saturates E4M3; S = 340 does at a max
    whose residual r^ is 1.40625 (m log2 e = 0.49)."""
    m = 0.33984375  # BF16; m log2 e = 0.4903: r = 2**0.4903 -> r^ = 1.40625
    k = np.zeros((8, 4))
    k[:, 0] = m
    q = np.zeros((1, 4))
    q[0, 0] = 1.0
    for s, want_free in ((320.0, True), (340.0, False)):
        pol = flash.get_policy("ascend").replace(p_cast="e4m3", p_cast_rounding="rne", p_scale=s)
        res = flash.attention(
            q, k, np.ones((8, 2)), "amla", scale=1.0, block_n=8, policy=pol, trace=True
        )
        assert float(res.trace.r_hat.max()) == 1.40625
        assert (int(res.trace.p_saturate.sum()) == 0) == want_free
        assert conditions("amla", None, "e4m3", "rne", s, kv_len=8, v_max=1.0).saturation_free == (
            want_free
        )


def test_clamp_reach_against_the_emulator():
    free, sure = clamp_reach(-30)
    assert free == pytest.approx(30 * math.log(2)) and sure == pytest.approx(31 * math.log(2))
    for jump, clamped in ((20.5, False), (21.625, True)):  # 20.5 < 20.79, 21.625 > 21.49
        k = np.zeros((16, 4))
        k[8:, 0] = jump
        q = np.zeros((2, 4))
        q[:, 0] = 1.0
        res = flash.attention(q, k, np.ones((16, 3)), "amla", scale=1.0, block_n=8)
        assert (res.hazards["clamp"] > 0) == clamped, jump


def test_int_add_min_safe_against_the_hazard_classes():
    """|O| >= 2**-95 survives the worst increment (dn clamped at -30, eps just above -1);
    half of it does not; zero never does."""
    lo = int_add_min_safe(-30)
    n_worst = round((-30 - 0.999) * 2**23)
    rep = exp2_add_bits_hazards(np.float32([lo, -lo, lo / 2, 0.0]), n_worst)
    assert rep.codes.tolist()[:2] == [0, 0]
    assert rep.codes[2] != 0 and rep.codes[3] != 0


def test_t_interval_matches_students_t():
    x = [1e-3, 2e-3, 4e-3]
    iv = t_interval(x)
    half = stats.t.ppf(0.975, 2) * np.std(x, ddof=1) / math.sqrt(3)
    assert iv.mean == pytest.approx(np.mean(x)) and iv.hi - iv.mean == pytest.approx(half)
    g = t_interval(x, log=True)
    assert g.mean == pytest.approx(2e-3) and g.lo < 2e-3 < g.hi and g.lo > 0
    assert t_interval([1.0, math.inf]).mean == math.inf
    with pytest.raises(ValueError):
        t_interval([])


def test_grid_validation_names_the_argument():
    with pytest.raises(ValueError, match="variants"):
        Grid(variants=("fa_fp33",))
    with pytest.raises(ValueError, match="p_scales"):
        Grid(p_scales=(0.0,))
    with pytest.raises(ValueError, match="hardware"):
        Grid(hardware=("tpu",))
    with pytest.raises(ValueError, match="splits"):
        Grid(splits=(0,))
    with pytest.raises(TypeError, match="variants"):
        Grid(variants="amla")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seeds"):
        Measure(seeds=0)
    with pytest.raises(ValueError, match="workloads"):
        Measure(workloads=("nope",))
    g = Grid(variants=("amla", "lazy", "skip_scale"), taus_log2=(0.0, 8.0), taus_ln=(6.0,))
    assert [(p.variant, p.tau) for p in g.points()] == [
        ("amla", None),
        ("lazy", 0.0),
        ("lazy", 8.0),
        ("skip_scale", 6.0),
    ]


def test_explore_reproduces_fa4s_fp8_saturation_and_skip_scales_safety():
    """lazy tau = 8 with S = 2**8 into E4M3: saturates (closed form and count), its error
    jumps; skip_scale at 6 nats with S = 1 does not; on the drift workload."""
    g = Grid(variants=("lazy", "skip_scale"), p_casts=("e4m3",), p_scales=(1.0, 256.0))
    m = Measure(workloads=("drift",), seeds=2, rows=4, kv_len=1024, throughput=False)
    r = explore(g, m)
    by = {(p.point.variant, p.point.p_scale): p for p in r.points}
    bad = by[("lazy", 256.0)]
    assert not bad.conditions.saturation_free and bad.saturations > 0
    for key in (("lazy", 1.0), ("skip_scale", 1.0)):
        assert by[key].conditions.saturation_free and by[key].saturations == 0
    assert bad.error.lo > by[("lazy", 1.0)].error.hi
    d = json.loads(r.to_json())
    assert set(d) >= {"points", "limits"} and len(d["points"]) == 4
    assert {"p_cast", "p_scale", "tau_units", "tau_max"} <= set(d["limits"][0])


def test_cli_explore_writes_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "e.json", tmp_path / "e.png"
    rc = main(
        [
            "explore",
            "--variants",
            "fa_fp32,skip_scale",
            "--p-casts",
            "e4m3",
            "--workloads",
            "mla",
            "--seeds",
            "1",
            "--rows",
            "2",
            "--kv-len",
            "256",
            "--hardware",
            "ascend910c,b200",
            "--json",
            str(out),
            "--plot",
            str(png),
        ]
    )
    assert rc == 0
    d = json.loads(out.read_text())
    assert len(d["points"]) == 4 and all(p["tflops"] > 0 for p in d["points"])
    assert png.stat().st_size > 10_000
    assert "skip_scale tau=6ln e4m3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--variants", "fa_fp33"],
        ["--p-scales", "abc"],
        ["--seeds", "0"],
        ["--hardware", "tpu"],
        ["--block-sizes", "x"],
        ["--tau-ln", "-1"],
    ],
)
def test_cli_bad_input_is_one_sentence_and_exit_2(argv, capsys):
    assert main(["explore", "--no-throughput", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("amla-numerics: error:")
