"""The batch's llama-server on its own: its niceness."""

from __future__ import annotations

import pytest

from sandserve.engines.batch_server import BATCH_NICE_ENV, batch_niceness
from sandserve.errors import ConfigError


def test_the_batch_servers_niceness_is_only_what_the_setting_asks_for():
    """None: SCHED_IDLE, the default; a niceness when set."""
    assert batch_niceness({}) is None
    assert batch_niceness({BATCH_NICE_ENV: ""}) is None
    assert batch_niceness({BATCH_NICE_ENV: " 10 "}) == 10
    assert batch_niceness({BATCH_NICE_ENV: "0"}) == 0


@pytest.mark.parametrize("value", ["-1", "20", "low"])
def test_a_niceness_out_of_range_is_refused_with_what_to_do(value):
    with pytest.raises(ConfigError) as refused:
        batch_niceness({BATCH_NICE_ENV: value})
    assert BATCH_NICE_ENV in str(refused.value) and repr(value) in str(refused.value)
    assert refused.value.hint and "Unset it" in refused.value.hint
