"""An uplink estimator that reads the trace's true past: a reference for causal estimators.

`PastCapacityEstimator` answers with the capacity the trace actually delivered over the last
`window_s` seconds, known exactly (a real device only sees its own transfers). A chooser given
it still cannot know the next transfer: what it leaves of the oracle's gain is what the future
holds; what the real estimator leaves beyond it is mostly what the device does not observe. At
sub-Mbit rates the window holds only a few packets and the reference is noisy.
"""

from __future__ import annotations

from splitting.estimators import LinkEstimate, UplinkEstimator
from splitting.traces import PACKET_BYTES, UplinkTrace

DEFAULT_WINDOW_S = 0.1


class PastCapacityEstimator(UplinkEstimator):
    """The trace's delivered capacity over the last `window_s`, with the base RTT known."""

    def __init__(self, trace: UplinkTrace, *, rtt_s: float, window_s: float = DEFAULT_WINDOW_S):
        super().__init__(rtt_s=rtt_s)
        self.trace = trace
        self.window_s = window_s

    def estimate(self, now: float) -> LinkEstimate:
        start = max(0.0, now - self.window_s)
        delivered = self.trace.opportunities_before(now * 1000)
        delivered -= self.trace.opportunities_before(start * 1000)
        span = max(now - start, 1e-3)
        return LinkEstimate(
            rate_bps=max(delivered * PACKET_BYTES / span, 1.0),
            rtt_s=self.rtt_prior_s,
            age_s=0.0,
            spread=self.spread(),
        )
