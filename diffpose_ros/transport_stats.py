"""What happened to a camera's frames before the node saw them, without rclpy.

- ``TransportLossCounter``: frames a publisher sent that never reached the node (lost in DDS
  transport, e.g. large images over best-effort UDP), from DDS publication sequence numbers or,
  where the middleware or rclpy cannot deliver them, estimated from image stamp intervals.
- ``StampClockMonitor``: whether image stamps come from the node's clock, so that
  stamp-to-publish latency means something (a camera without time sync, or a bag played without
  ``--clock``, gives stamps from another clock).

The ROS layer feeds both with what a subscription callback sees (message info and header).
"""
from __future__ import annotations

import collections
from collections.abc import Hashable

import numpy as np

from diffpose_ros.buffers import FramePeriodEstimator

SEQUENCE_NUMBERS = 'sequence_numbers'
STAMP_INTERVALS = 'stamp_intervals (estimate)'
MAX_PUBLISHERS = 64             # publishers remembered per topic (drivers restart: new ids)
MAX_PENDING_INTERVALS = 64      # stamp intervals kept until the frame period is known
MIN_INTERVALS = 8               # intervals seen before the period estimate is trusted


class TransportLossCounter:
    """Frames lost between the publishers of one image topic and the node.

    With publication sequence numbers (rclpy's message info, Iron and later, with Fast DDS;
    Humble's rclpy cannot hand message info to a callback and Cyclone DDS gives none), gaps are
    counted exactly per publisher: number n followed by n + k means k - 1 frames were lost.
    Frames before the first one seen from a publisher are not counted (it may have published
    before the node subscribed), nor lost frames after the newest one (seen when the next one
    arrives). A number lower than the previous one starts that publisher over (restart).

    Without sequence numbers the loss is estimated from stamp intervals: an interval of about k
    nominal frame periods (``FramePeriodEstimator``) counts k - 1 lost frames. This estimate also
    counts frames the camera itself skipped, assumes one publisher per topic, and undercounts
    when more than three quarters of the frames are lost (the period estimate then grows).
    """

    def __init__(self) -> None:
        self.lost_by_sequence = 0
        self.lost_by_stamps = 0
        self.source = 'none yet'      # how the newest frame was judged (SEQUENCE_NUMBERS, ...)
        self._last_sequence: collections.OrderedDict[Hashable, int] = collections.OrderedDict()
        self._period = FramePeriodEstimator()
        self._last_stamp_ns: int | None = None
        self._intervals_seen = 0
        self._pending_intervals: collections.deque[int] = collections.deque(
            maxlen=MAX_PENDING_INTERVALS)

    @property
    def lost(self) -> int:
        return self.lost_by_sequence + self.lost_by_stamps

    @property
    def publishers_seen(self) -> int:
        return len(self._last_sequence)

    def resubscribed(self) -> None:
        """The node subscribed again (re-activation): what publishers sent in between was not
        lost in transport, so sequence and stamp gaps across the pause are not counted."""
        self._last_sequence.clear()
        self._period.reset()
        self._last_stamp_ns = None
        self._intervals_seen = 0
        self._pending_intervals.clear()

    def observe(self, stamp_ns: int, sequence_number: int | None = None,
                publisher_id: Hashable = None) -> int:
        """One received frame; returns the frames newly counted as lost before it."""
        if sequence_number is not None:
            self.source = SEQUENCE_NUMBERS
            return self._observe_sequence(publisher_id, int(sequence_number))
        self.source = STAMP_INTERVALS
        return self._observe_stamp(int(stamp_ns))

    def _observe_sequence(self, publisher_id: Hashable, sequence_number: int) -> int:
        last = self._last_sequence.pop(publisher_id, None)     # re-inserted as the newest
        self._last_sequence[publisher_id] = sequence_number
        while len(self._last_sequence) > MAX_PUBLISHERS:
            self._last_sequence.popitem(last=False)
        if last is None or sequence_number <= last:
            return 0               # first frame seen, a restart, or a duplicate
        lost = sequence_number - last - 1
        self.lost_by_sequence += lost
        return lost

    def _observe_stamp(self, stamp_ns: int) -> int:
        last, self._last_stamp_ns = self._last_stamp_ns, stamp_ns
        self._period.observe(stamp_ns)
        if last is None or stamp_ns <= last:
            if last is not None and stamp_ns < last:
                self._pending_intervals.clear()     # time jumped back: the estimator restarts
                self._intervals_seen = 0
            return 0
        self._pending_intervals.append(stamp_ns - last)
        self._intervals_seen += 1
        period_ns = self._period.period_ns
        if period_ns is None or self._intervals_seen < MIN_INTERVALS:
            return 0                               # judged once the period is known
        lost = sum(max(0, int(round(interval / period_ns)) - 1)
                   for interval in self._pending_intervals)
        self._pending_intervals.clear()
        self.lost_by_stamps += lost
        return lost


class StampClockMonitor:
    """Whether a camera's image stamps are comparable with the node's clock.

    The offset of a frame is the node's clock when it arrived minus its stamp: transport and
    driver delay, normally milliseconds. Stamps count as comparable while the median offset of
    the last ``history`` frames lies within +-``tolerance_ns``; the median keeps a few odd stamps
    from flipping the state. Frames that arrive while the node's clock has not started (sim time
    before the first /clock) are not judged.
    """

    def __init__(self, tolerance_ns: int = 1_000_000_000, history: int = 15):
        if tolerance_ns <= 0 or history < 1:
            raise ValueError('tolerance_ns must be > 0 and history >= 1')
        self.tolerance_ns = int(tolerance_ns)
        self._offsets_ns: collections.deque[int] = collections.deque(maxlen=history)
        self.comparable: bool | None = None      # None until a frame was judged

    @property
    def offset_ns(self) -> int | None:
        """Median offset (node clock at arrival - stamp) of the recent frames."""
        if not self._offsets_ns:
            return None
        return int(np.median(np.fromiter(self._offsets_ns, np.int64)))

    def observe(self, stamp_ns: int, clock_ns: int) -> bool | None:
        """One frame's stamp and the node's clock at its arrival (0: clock not started).

        Returns the new state when it changed (False: stamps became incomparable), else None.
        """
        if clock_ns <= 0:
            return None
        self._offsets_ns.append(int(clock_ns) - int(stamp_ns))
        comparable = abs(self.offset_ns) <= self.tolerance_ns
        if comparable == self.comparable:
            return None
        self.comparable = comparable
        return comparable
