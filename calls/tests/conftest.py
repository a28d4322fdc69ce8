import pytest


@pytest.fixture(autouse=True)
def _no_ring_timers_in_the_test_process(settings) -> None:
    """Services called in this process must not leave timer threads behind; the live
    servers the tests start keep theirs."""
    settings.CALL_TIMERS_IN_PROCESS = False
