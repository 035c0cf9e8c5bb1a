"""The suite's own set-up: an ``xdist_group`` reaches pytest-xdist's scheduler (tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("groups-check")
def test_an_xdist_group_reaches_the_scheduler(request: pytest.FixtureRequest) -> None:
    """Under ``--dist loadgroup`` (pyproject.toml) the scheduler keeps a group on one worker only when the
    node id ends in ``@GROUP``: without it the Ray tests run two Rays at once and module fixtures are built
    on both workers."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by a pytest-xdist worker under --dist loadgroup")
    assert request.node.nodeid.endswith("@groups-check")
