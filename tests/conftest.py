"""Shared test settings.

Hypothesis is derandomised in CI so a run is reproducible.

The suite runs under pytest-xdist (``make test``: ``-n auto --dist loadgroup``). A module whose
tests share a module-scoped fixture (one local stack, one sandbox, one ``local up`` process, one
fault-injection harness) is kept on one worker as an ``xdist_group`` named after the module, so
that fixture starts once, as it does without xdist. A test that names its own ``xdist_group``
keeps it (the fault-injection share splits its seeds into groups that each start a harness).
"""

import dataclasses
import os
from collections.abc import Generator

import pytest
from hypothesis import HealthCheck, settings

# No per-example deadline: the first examples of a run pay import and cache warm-up costs on a
# busy 2-core machine, which is noise, not a finding.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

_SHARED_SCOPES = {"module", "package", "session"}


def _shares_a_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        defs[-1].scope in _SHARED_SCOPES and not defs[-1].argname.startswith("_")
        for defs in info.name2fixturedefs.values()
        if defs and defs[-1].baseid  # the project's own fixtures, not pytest's or plugins'
    )


def _group(item: pytest.Item) -> str | None:
    marks = [m.args[0] if m.args else m.kwargs.get("name", "default")
             for m in item.iter_markers("xdist_group")]  # fmt: skip
    return "_".join(sorted({str(m) for m in marks})) if marks else None


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Generator[None, None, None]:
    # Before every other implementation, xdist's among them: name the shared-fixture groups.
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _shares_a_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    yield
    if getattr(config.option, "loadgroup", False):  # set on xdist workers only
        # The scheduler hands out groups first (largest first), then single tests in this
        # order: the longest single tests (marked slow) go first, not last, so none of them
        # is still running alone at the end. Stable: every worker sorts alike.
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
        _suffix_the_groups(items)


def _suffix_the_groups(items: list[pytest.Item]) -> None:
    """pytest-xdist 3.8 tells its scheduler an item's group by appending ``@group`` to the
    item's ``_nodeid``, which pytest 9.2 no longer reads (its node ids are structured): the
    groups are then silently ignored (pytest-dev/pytest-xdist#1386, fix proposed in #1388).
    Until a release has the fix, append the suffix to the structured id, as that fix does."""
    for item in items:
        group, node_id = _group(item), getattr(item, "_id", None)
        if group is None or node_id is None or item.nodeid.endswith(f"@{group}"):
            continue
        *parents, name = node_id.names
        params = f"[{node_id.params}]" if node_id.params is not None else ""
        names = (*parents, f"{name}{params}@{group}")
        item._id = dataclasses.replace(node_id, names=names, params=None)
