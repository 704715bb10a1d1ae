"""The pytest plugin (entry point ``pytest11``: loaded by pytest once the package is installed).

Fixtures
--------
``attention_reference``
    ``attention_reference(q, k, v, scale=None, mask=None) -> (out, lse)``: the certified
    float64 reference, computed once per distinct input in the session.
``attention_budget``
    The :class:`~amla_numerics.analysis.budgets.KernelBudget` named by ``--amla-kernel`` in
    the ``--amla-budget`` file, or None.
``assert_attention``
    :func:`~amla_numerics.testing.assert_attention_close`: the default verdict (the error
    against the declared schedule's, ``variant=``, default ``fa_fp32``), plus the budget's
    limits for the case (the case name is the test's name, so ``match`` globs select per
    test); explicit ``max_*`` arguments override them.

Options: ``--amla-budget FILE`` (budgets TOML) and ``--amla-kernel NAME`` (its table), or the
ini keys ``amla_budget`` / ``amla_kernel``.

A test a user can copy (``docs/testing.md``)::

    import numpy as np, ml_dtypes

    def test_my_kernel(assert_attention):
        rng = np.random.default_rng(0)
        q = rng.standard_normal((128, 576)).astype(ml_dtypes.bfloat16)
        k = rng.standard_normal((4096, 576)).astype(ml_dtypes.bfloat16)
        v = k[:, :512]
        out = my_kernel(q, k, v, scale=1 / 192**0.5)      # the kernel under test
        assert_attention(out, q, k, v, scale=1 / 192**0.5)  # the default verdict
"""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["assert_attention", "attention_budget", "attention_reference", "pytest_addoption"]


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("amla_numerics", "attention kernels against the certified reference")
    group.addoption("--amla-budget", default=None, metavar="FILE", help="budgets TOML file")
    group.addoption("--amla-kernel", default=None, metavar="NAME", help="kernel table in it")
    parser.addini("amla_budget", "budgets TOML file for assert_attention", default="")
    parser.addini("amla_kernel", "kernel table of amla_budget", default="")


@pytest.fixture(scope="session")
def attention_reference():
    """The cached certified reference: ``(q, k, v, scale=None, mask=None) -> (out, lse)``."""
    from amla_numerics.testing.compare import reference_for

    def ref(q: Any, k: Any, v: Any, scale: Any = None, mask: Any = None):
        return reference_for(q, k, v, scale, mask=mask)

    return ref


@pytest.fixture(scope="session")
def attention_budget(pytestconfig: Any):
    """The kernel budget selected by ``--amla-budget``/``--amla-kernel`` (or None)."""
    path = pytestconfig.getoption("amla_budget") or pytestconfig.getini("amla_budget")
    name = pytestconfig.getoption("amla_kernel") or pytestconfig.getini("amla_kernel")
    if not path:
        return None
    from amla_numerics.analysis.budgets import load_budgets

    book = load_budgets(path)
    if not name:
        if len(book.kernels) != 1:
            raise pytest.UsageError(
                f"--amla-budget {path} has several kernels; name one with --amla-kernel"
            )
        (name,) = book.kernels
    try:
        return book.kernel(name)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture
def assert_attention(request: Any, attention_budget: Any):
    """``assert_attention_close`` with the selected budget's limits for this test."""
    from amla_numerics.testing.assertions import assert_attention_close

    def check(out: Any, q: Any, k: Any, v: Any, **kw: Any) -> None:
        if attention_budget is not None and "budget" not in kw:
            kw["budget"] = attention_budget.limits_for(
                name=request.node.name, head_dim=int(q.shape[-1]), kv_len=int(k.shape[-2])
            )
        assert_attention_close(out, q, k, v, **kw)

    return check
