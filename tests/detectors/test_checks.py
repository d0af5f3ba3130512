"""Every signal's sequential detector passes the contract checks (detectors.checks), parametrised over
all signals with a ``cusum`` detector so that a new one cannot skip them."""
import pytest

from detectors.checks import HARNESSES, yield_checks
from detectors.detection import DETECTORS

CASES = [(sig, chk.__name__) for sig in sorted(HARNESSES) for chk in yield_checks(HARNESSES[sig]())]


def test_every_cusum_signal_has_a_harness():
    assert {s for s, dets in DETECTORS.items() if "cusum" in dets} == {h.split(":")[0] for h in HARNESSES}


@pytest.mark.parametrize("signal,check", CASES)
def test_contract(signal, check):
    h = HARNESSES[signal]()
    fn = {c.__name__: c for c in yield_checks(h)}[check]
    report = fn(h)
    if check == "check_detection_delay":
        assert report and all(v is not None and v >= 0 for v in report.values()), report
