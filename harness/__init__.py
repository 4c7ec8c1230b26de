"""Real processes that the tests and the benchmarks drive: a server process
(:mod:`harness.process`), nats-server (:mod:`harness.natsserver`), nginx
(:mod:`harness.nginx`), network namespaces behind a shaped link
(:mod:`harness.netns`) and a viewer to run in one (:mod:`harness.link_client`),
browsers of three engines (:mod:`harness.browsers`); and what they share: free
ports and stopping a process by its PID within a deadline (:mod:`harness.process`),
percentiles (:mod:`harness.stats`), the colour frames a files camera shows
(:mod:`harness.colours`) and a Motion-JPEG parser (:mod:`harness.multipart`).

Not installed (like ``tests/`` and ``bench/``): imported from a checkout.  It has no
pytest fixtures (those are in ``tests/conftest.py``) and imports neither ``tests``
nor pytest.
"""
