"""The local stand-ins listen on 127.0.0.1 only: nothing of the test setup is reachable from outside."""

from __future__ import annotations

from pathlib import Path

from devkit.azurite import Azurite
from devkit.fault_proxy import FaultProxy
from devkit.local_stack import LocalStack

LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp
LOOPBACK = "0100007F"  # 127.0.0.1, little-endian hex


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a listening socket on `port`, IPv4 and IPv6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == LISTEN and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_azurite_the_sandbox_and_the_fault_proxy_listen_on_loopback_only(azurite: Azurite) -> None:
    with LocalStack(azurite) as stack, FaultProxy(azurite.port) as proxy:
        sandbox_port = int(stack.sandbox.url.rsplit(":", 1)[1])
        for port in (azurite.port, sandbox_port, proxy.port):
            assert listening_addresses(port) == {LOOPBACK}, port
