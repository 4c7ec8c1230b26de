"""A shaped link for tests and benchmarks: a veth pair into a network namespace of its own,
with a token bucket (``tc ... tbf``) on the traffic that leaves the root side.

    with ShapedLink(rate="2mbit") as link:          # root only (ip netns, tc)
        server = ServerProcess(args, log, host=link.host_address).start()  # the root side
        proc = link.spawn([python, "harness/link_client.py", f"ws://{link.host_address}:{port}/ws"])
        link.set_rate("100mbit")                     # live, with tc qdisc change
        ...
        stop_process(proc)                           # by its PID (harness/process.py)

What it makes, and removes on exit (exactly that, nothing else):

* a namespace ``camstream-<pid>-<n>`` (this process's PID, a counter);
* a veth pair ``cs<pid>h<n>`` (root side) and ``cs<pid>n<n>`` (in the namespace), names of at
  most 15 characters;
* a /30 inside 10.213.0.0/16 that overlaps no address or route of the root namespace: the root
  side gets the first host address, the namespace side the second; both links and the
  namespace's ``lo`` are up;
* ``tc qdisc add dev <root side> root tbf rate RATE burst BURST latency LATENCY``: what the
  server sends to the client (root side to namespace) is shaped; the other direction is not.

``netem`` is not needed (nor present in these kernels): a token bucket is a bottleneck link,
with its queue bounded by ``latency``.  Teardown ends the processes :meth:`ShapedLink.spawn`
started that are still running (by PID), deletes the root-side veth (which takes its peer
with it, synchronously) and then the namespace.

Anything that cannot be made raises :class:`LinkError` naming the command and its stderr;
tests let it fail the test (never a skip).  Blocking calls only (subprocess): not for the
IOLoop thread.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import subprocess
from collections.abc import Sequence
from types import TracebackType

from harness.process import stop_process

#: Where the /30s come from.
POOL = ipaddress.ip_network("10.213.0.0/16")

_counter = itertools.count(1)


class LinkError(RuntimeError):
    """A command making or changing the link failed; the message names it and its stderr."""


def run(cmd: Sequence[str], timeout_s: float = 15.0) -> str:
    """Run ``cmd`` to completion; its stdout.  Raises :class:`LinkError` (with the command
    line and stderr) if it cannot be started, fails or takes longer than ``timeout_s``."""
    line = " ".join(cmd)
    try:
        result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LinkError(f"`{line}` could not run: {exc}") from exc
    if result.returncode != 0:
        raise LinkError(f"`{line}` exited with {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def used_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of the root namespace's addresses and routes (``ip -j``);
    a default route counts as nothing (anything more specific wins over it)."""
    found: list[ipaddress.IPv4Network] = []
    for entry in json.loads(run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        for info in entry.get("addr_info", []):
            found.append(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network)
    for entry in json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]"):
        dst = entry.get("dst", "")
        if dst and dst != "default":
            found.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return found


def free_subnet(start: int = 0) -> ipaddress.IPv4Network:
    """A /30 of :data:`POOL` that overlaps no network of :func:`used_networks`; the search
    starts at the ``start``-th /30 (so concurrent processes start apart).  LinkError if none."""
    used = used_networks()
    subnets = list(POOL.subnets(new_prefix=30))
    for i in range(len(subnets)):
        candidate = subnets[(start + i) % len(subnets)]
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise LinkError(f"no free /30 in {POOL}")


class ShapedLink:
    """A veth pair into a namespace of its own, shaped server-to-client by tbf (see the module).

    ``rate``, ``burst`` and ``latency`` are tc's units (``2mbit``, ``32kbit``, ``50ms``).
    Not thread-safe: one thread makes, uses and tears down a link.  :meth:`create` (or
    ``with``) makes it; :meth:`close` removes it and is idempotent.
    """

    def __init__(self, rate: str = "2mbit", burst: str = "32kbit", latency: str = "50ms") -> None:
        n = next(_counter)
        pid = os.getpid()
        self.namespace = f"camstream-{pid}-{n}"
        self.host_dev = f"cs{pid}h{n}"
        self.ns_dev = f"cs{pid}n{n}"
        if len(self.host_dev) > 15:
            raise LinkError(f"interface name {self.host_dev!r} is longer than 15 characters")
        self.rate = rate
        self.burst = burst
        self.latency = latency
        self.subnet: ipaddress.IPv4Network | None = None
        self._start = (pid * 131 + n) % (2 ** (30 - POOL.prefixlen))
        self._made_ns = False
        self._made_veth = False
        self._procs: list[subprocess.Popen] = []

    # -- addresses --------------------------------------------------------------
    @property
    def host_address(self) -> str:
        """The root side's address (where a server listens for the namespace's clients)."""
        if self.subnet is None:
            raise LinkError("the link has not been created")
        return str(self.subnet.network_address + 1)

    @property
    def ns_address(self) -> str:
        """The namespace side's address (where the clients' connections come from)."""
        if self.subnet is None:
            raise LinkError("the link has not been created")
        return str(self.subnet.network_address + 2)

    # -- making and removing -------------------------------------------------------
    def create(self) -> ShapedLink:
        """Make the namespace, the veth pair, the addresses and the shaper; returns self.
        On any failure removes what it made so far and raises LinkError."""
        try:
            run(["ip", "netns", "add", self.namespace])
            self._made_ns = True
            run(["ip", "link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev])
            self._made_veth = True
            run(["ip", "link", "set", self.ns_dev, "netns", self.namespace])
            self.subnet = free_subnet(self._start)
            prefix = f"/{self.subnet.prefixlen}"
            run(["ip", "addr", "add", self.host_address + prefix, "dev", self.host_dev])
            run(["ip", "-n", self.namespace, "addr", "add", self.ns_address + prefix, "dev", self.ns_dev])
            run(["ip", "link", "set", self.host_dev, "up"])
            run(["ip", "-n", self.namespace, "link", "set", self.ns_dev, "up"])
            run(["ip", "-n", self.namespace, "link", "set", "lo", "up"])
            run(["tc", "qdisc", "add", "dev", self.host_dev, "root", *self._tbf()])
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """End the processes :meth:`spawn` started (by PID), delete the veth pair and the
        namespace this link made.  Idempotent; raises LinkError only if a deletion failed."""
        for proc in self._procs:
            stop_process(proc)
        self._procs.clear()
        errors = []
        if self._made_veth:
            try:
                run(["ip", "link", "del", self.host_dev])
            except LinkError as exc:
                # Gone already (e.g. with its namespace): that is what was wanted.
                if "Cannot find device" not in str(exc) and "does not exist" not in str(exc):
                    errors.append(str(exc))
            self._made_veth = False
        if self._made_ns:
            try:
                run(["ip", "netns", "del", self.namespace])
            except LinkError as exc:
                errors.append(str(exc))
            self._made_ns = False
        if errors:
            raise LinkError("; ".join(errors))

    def __enter__(self) -> ShapedLink:
        return self.create()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the shaper -------------------------------------------------------------
    def _tbf(self) -> list[str]:
        return ["tbf", "rate", self.rate, "burst", self.burst, "latency", self.latency]

    def set_rate(self, rate: str, burst: str | None = None, latency: str | None = None) -> None:
        """Change the shaper live (``tc qdisc change``; connections stay up).  ``burst`` and
        ``latency`` keep their values unless given.  LinkError if tc refuses."""
        self.rate = rate
        self.burst = burst or self.burst
        self.latency = latency or self.latency
        run(["tc", "qdisc", "change", "dev", self.host_dev, "root", *self._tbf()])

    def qdisc(self) -> str:
        """``tc -s qdisc show`` of the root side: the shaper as the kernel has it, with its
        counters (sent, dropped, overlimits)."""
        return run(["tc", "-s", "qdisc", "show", "dev", self.host_dev]).strip()

    # -- processes in the namespace -----------------------------------------------------
    def command(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` prefixed to run inside the namespace (``ip netns exec NS ...``, which
        execs it: the process's PID is the command's own)."""
        return ["ip", "netns", "exec", self.namespace, *cmd]

    def spawn(self, cmd: Sequence[str], **popen_kwargs: object) -> subprocess.Popen:
        """Start ``cmd`` inside the namespace (``subprocess.Popen`` keyword arguments
        passed on); it is ended by :meth:`close` if still running.  Does not wait."""
        if not self._made_ns:
            raise LinkError("the link has not been created")
        proc = subprocess.Popen(self.command(cmd), **popen_kwargs)  # type: ignore[call-overload]
        self._procs.append(proc)
        return proc
