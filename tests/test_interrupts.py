"""StopSignals (train.interrupts): the first SIGINT or SIGTERM becomes a request the loop reads at a step
boundary; a second stops at once; the previous handlers come back."""

from __future__ import annotations

import os
import signal
import time

import pytest

from train.interrupts import Interrupted, StopSignals


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # Python runs the handler at the next bytecode boundary


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_is_a_request_to_stop_at_the_next_step(signum):
    said = []
    before = signal.getsignal(signum)
    with StopSignals(say=said.append) as stop:
        assert not stop.stop_at(1)
        _deliver(signum)
        assert stop.requested == signum and stop.signum == signum
        assert stop.stop_at(2)
    assert signal.getsignal(signum) is before, "the previous handler is back"
    assert len(said) == 1 and "stopping after the step in flight and saving a checkpoint" in said[0]


def test_a_second_ctrl_c_stops_at_once():
    with pytest.raises(KeyboardInterrupt):
        with StopSignals(say=lambda text: None):
            _deliver(signal.SIGINT)
            _deliver(signal.SIGINT)


def test_a_second_sigterm_exits_with_143():
    with pytest.raises(SystemExit) as stopped:
        with StopSignals(say=lambda text: None):
            _deliver(signal.SIGTERM)
            _deliver(signal.SIGTERM)
    assert stopped.value.code == 143


def test_interrupted_carries_the_conventional_exit_code_and_the_one_line():
    e = Interrupted(signal.SIGINT, 100)
    assert e.exit_code == 130 and Interrupted(signal.SIGTERM, 100).exit_code == 143
    assert str(e) == "interrupted at step 100 by Ctrl-C (SIGINT): checkpoint saved; run the same command to resume"


def test_multi_process_runs_stop_at_the_agreed_step_and_leave_sigterm_to_jax():
    agreed = {7}
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals(preemption_sync=lambda step: step in agreed, say=lambda text: None) as stop:
        assert signal.getsignal(signal.SIGTERM) is before, "JAX's preemption service keeps SIGTERM"
        assert [stop.stop_at(step) for step in (5, 6, 7)] == [False, False, True]
