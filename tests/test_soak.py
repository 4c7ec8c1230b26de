"""Soak (bounded): thousands of visits of every kind, with a camera that keeps failing;
afterwards the server's file descriptors, threads and memory are back where they were."""

from __future__ import annotations

from bench.soak import run


def test_soak_leaves_nothing_behind():
    report = run(cycles=3000, threads=4, flap_s=1.0, seconds_limit=120)
    assert report["cycles"] == 3000 and report["failed_visits"] == 0, report["failure_examples"]
    assert report["flaky_failures_logged"] >= 1  # the flaky camera did fail (and recover) meanwhile
    before, after = report["before"], report["after"]
    assert after["fds"] <= before["fds"], (before, after)
    assert after["threads"] <= before["threads"], (before, after)
    # The allocator keeps a few MB once touched (the same after 5000 or 15000 visits); a leak grows.
    assert report["rss_growth_kb"] < 10 * 1024, report
    assert report["streaming_after"]
    assert report["tracebacks_in_log"] == 0 and report["errors_in_log"] == 0
