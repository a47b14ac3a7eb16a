"""Transport-loss counting and stamp-clock checks (core, no ROS)."""
from __future__ import annotations

import numpy as np
import pytest

from diffpose_ros.transport_stats import (
    MAX_PUBLISHERS,
    SEQUENCE_NUMBERS,
    STAMP_INTERVALS,
    StampClockMonitor,
    TransportLossCounter,
)

PERIOD_NS = 100_000_000


def test_sequence_gaps_are_counted_per_publisher():
    counter = TransportLossCounter()
    assert counter.source == 'none yet'
    # two publishers interleaved on one topic, each with its own numbers; the first frame seen
    # from a publisher (number 40: it published before the node subscribed) counts nothing
    arrivals = [('a', 1), ('b', 40), ('a', 2), ('b', 41), ('a', 5), ('b', 44), ('a', 6),
                ('b', 50)]
    newly = [counter.observe(0, seq, pub) for pub, seq in arrivals]
    assert newly == [0, 0, 0, 0, 2, 2, 0, 5]
    assert counter.lost == counter.lost_by_sequence == 9 and counter.lost_by_stamps == 0
    assert counter.source == SEQUENCE_NUMBERS and counter.publishers_seen == 2


def test_restart_and_duplicates_are_not_losses():
    counter = TransportLossCounter()
    for seq in (1, 2, 3, 3, 1, 2, 4):       # duplicate 3; restart at 1 (same id); 2 -> 4 loses 3
        counter.observe(0, seq, 'pub')
    assert counter.lost == 1


def test_frames_sent_while_unsubscribed_are_not_losses():
    counter = TransportLossCounter()
    for seq in (1, 2, 4):
        counter.observe(seq * PERIOD_NS, seq, 'pub')
    counter.resubscribed()        # deactivated, the publisher went on (5..19), activated again
    for seq in (20, 21, 23):
        counter.observe(seq * PERIOD_NS, seq, 'pub')
    assert counter.lost == 2
    stamps = TransportLossCounter()
    for t in list(range(10)) + [12]:
        stamps.observe(t * PERIOD_NS)
    stamps.resubscribed()
    for t in range(40, 50):
        stamps.observe(t * PERIOD_NS)
    assert stamps.lost == 2


def test_publishers_remembered_are_bounded():
    counter = TransportLossCounter()
    for publisher in range(3 * MAX_PUBLISHERS):
        counter.observe(0, 1, publisher)
    assert counter.publishers_seen == MAX_PUBLISHERS
    assert counter.observe(0, 3, 3 * MAX_PUBLISHERS - 1) == 1     # the newest are kept


def test_sequence_numbers_match_a_simulated_lossy_link():
    rng = np.random.default_rng(0)
    sent = np.arange(1, 501)
    received = sent[(rng.random(sent.size) > 0.6) | (sent == 1) | (sent == sent[-1])]
    counter = TransportLossCounter()
    for seq in received:
        counter.observe(int(seq) * PERIOD_NS, int(seq), b'gid')
    assert counter.lost == sent.size - received.size


@pytest.mark.parametrize('loss', [0.0, 0.2, 0.5])
def test_stamp_intervals_estimate_the_loss_without_sequence_numbers(loss):
    """Humble (no message info) or an RMW without sequence numbers: a 10 Hz camera with 5 ms
    stamp jitter, a fraction of frames lost at random."""
    rng = np.random.default_rng(1)
    stamps = (np.arange(400) * PERIOD_NS + rng.normal(0, 5e6, 400)).astype(np.int64)
    keep = rng.random(400) >= loss
    keep[:3] = keep[-1] = True
    counter = TransportLossCounter()
    for stamp in stamps[keep]:
        counter.observe(int(stamp))
    true_lost = int((~keep).sum())
    assert counter.source == STAMP_INTERVALS and counter.lost == counter.lost_by_stamps
    assert abs(counter.lost - true_lost) <= max(1, 0.1 * true_lost), (counter.lost, true_lost)


def test_stamp_estimate_judges_early_intervals_and_survives_a_jump_back():
    counter = TransportLossCounter()
    # the second interval (3 periods) comes before the period is known: judged once it is
    # (after MIN_INTERVALS intervals)
    stamps = [0, 1, 4, 5, 6, 7, 8, 9, 10, 12]
    assert [counter.observe(t * PERIOD_NS) for t in stamps] == [0] * 8 + [2, 1]
    # a looping bag: stamps jump back; nothing counted, the estimate starts over
    assert counter.observe(0) == 0
    assert [counter.observe(t * PERIOD_NS) for t in (1, 2, 3, 5, 6, 7, 8)] == [0] * 7
    assert counter.observe(9 * PERIOD_NS) == 1        # the 3 -> 5 interval, judged now
    assert counter.lost == 4


def test_stamp_clock_monitor_accepts_the_node_clock():
    monitor = StampClockMonitor()
    assert monitor.comparable is None and monitor.offset_ns is None
    clock = 1_700_000_000 * 10**9
    # stamps 5-60 ms old (driver and transport delay), and sim time lagging the stamp by a
    # /clock period
    changes = [monitor.observe(clock + i * PERIOD_NS - delay, clock + i * PERIOD_NS)
               for i, delay in enumerate((5_000_000, 60_000_000, -25_000_000, 10_000_000))]
    assert changes == [True, None, None, None]
    assert monitor.comparable and 0 < monitor.offset_ns < 60_000_000


def test_stamp_clock_monitor_flags_another_clock_once():
    monitor = StampClockMonitor()
    wall = 1_700_000_000 * 10**9
    boot = 12_345 * 10**9                         # a camera stamping with its uptime
    changes = [monitor.observe(boot + i * PERIOD_NS, wall + i * PERIOD_NS) for i in range(30)]
    assert changes.count(False) == 1 and changes.count(True) == 0
    assert not monitor.comparable
    assert monitor.offset_ns == wall - boot


def test_stamp_clock_monitor_ignores_odd_stamps_and_an_unstarted_clock():
    monitor = StampClockMonitor(history=15)
    clock = 5_000 * 10**9
    assert monitor.observe(clock, 0) is None and monitor.comparable is None   # no /clock yet
    changes = [monitor.observe(clock + i * PERIOD_NS, clock + i * PERIOD_NS + 10_000_000)
               for i in range(10)]
    changes += [monitor.observe(0, clock + 10 * PERIOD_NS)]     # one zero stamp: median holds
    assert changes.count(True) == 1 and False not in changes and monitor.comparable
    # the clock really changes (time sync lost): one change, and back when it recovers
    later = [monitor.observe(i * PERIOD_NS, clock + (20 + i) * PERIOD_NS) for i in range(15)]
    assert later.count(False) == 1 and not monitor.comparable
    back = [monitor.observe(clock + i * PERIOD_NS, clock + i * PERIOD_NS) for i in range(15)]
    assert back.count(True) == 1 and monitor.comparable


def test_stamp_clock_monitor_rejects_bad_settings():
    with pytest.raises(ValueError):
        StampClockMonitor(tolerance_ns=0)
    with pytest.raises(ValueError):
        StampClockMonitor(history=0)
