"""The lab's networks: one Linux bridge per tier, the machine as router, nftables from the topology.

``ruleset()`` is a pure function of ``infra.topology``: it renders the nft table that lets
through exactly the lab's allowed host-to-host flows (forward hook) and host-to-gateway flows
(the apt proxy, input hook), logs and counts every other packet from a lab bridge, and drops it.
The table touches only traffic of the lab's bridges; everything else on the machine passes as
before. No NAT: nothing in the lab reaches beyond the machine (the mirror only through the
gateway's apt caching proxy).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from billkit.lab.procs import StepError, run
from billkit.lab.state import NFT_TABLE, LabState
from infra.topology import GATEWAY, INTERNET, OPERATOR, TIERS, Flow, flows, hosts_of, lab_gateway, lab_hosts

BRIDGE_PREFIX = "bk-"
DROP_PREFIX = "billkit-drop "
SYSCTLS = {"net.ipv4.ip_forward": "1"}


def bridge_name(tier_name: str) -> str:
    name = BRIDGE_PREFIX + {"management": "mgmt"}.get(tier_name, tier_name)
    if len(name) > 15:
        raise ValueError(f"bridge name {name!r} is longer than the kernel's 15 characters")
    return name


def bridges() -> dict[str, str]:
    """Bridge name -> the machine's address with prefix on it."""
    out = {}
    for t in TIERS:
        prefix = ipaddress.ip_network(t.lab_cidr).prefixlen
        out[bridge_name(t.name)] = f"{lab_gateway(t.name)}/{prefix}"
    return out


def _addrs(role_name: str) -> str:
    return "{ " + ", ".join(h.address for h in hosts_of(role_name)) + " }"


def _comment(f: Flow) -> str:
    return f'comment "{f.src}->{f.dst} {f.protocol}/{f.port} {" ".join(f.controls)}"'


def proto_match(protocol: str, port: int) -> str:
    """The nft match of a flow's protocol and port. VRRP has no port; its number (112) is written out
    because minimal hosts have no /etc/protocols to resolve the name."""
    return "ip protocol 112" if protocol == "vrrp" else f"{protocol} dport {port}"


def forward_rules() -> list[str]:
    """One accept rule per lab flow between hosts of the topology (roles on both ends)."""
    rules = []
    for f in flows("lab"):
        if f.src in (INTERNET, OPERATOR, GATEWAY) or f.dst in (INTERNET, OPERATOR, GATEWAY):
            continue
        rules.append(
            f"ip saddr {_addrs(f.src)} ip daddr {_addrs(f.dst)} {proto_match(f.protocol, f.port)} accept {_comment(f)}"
        )
    return rules


def gateway_rules() -> list[str]:
    """Each host may reach its own gateway address only on the ports the topology grants."""
    rules = []
    for f in flows("lab"):
        if f.dst != GATEWAY:
            continue
        for h in hosts_of(f.src):
            rules.append(
                f"ip saddr {h.address} ip daddr {h.gateway} {proto_match(f.protocol, f.port)} accept {_comment(f)}"
            )
    return rules


def ruleset() -> str:
    names = ", ".join(f'"{b}"' for b in bridges())
    fwd = "\n".join(f"    {r}" for r in forward_rules())
    inp = "\n".join(f"    {r}" for r in gateway_rules())
    return f"""table inet {NFT_TABLE} {{
  set lab_bridges {{ type ifname; elements = {{ {names} }}; }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname @lab_bridges jump lab_forward
    oifname @lab_bridges jump lab_forward
  }}
  chain lab_forward {{
    ct state established,related accept
    ct state invalid drop
{fwd}
    counter log prefix "{DROP_PREFIX}" level info drop comment "NET-02 LOG-03 default deny"
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname @lab_bridges jump lab_input
  }}
  chain lab_input {{
    ct state established,related accept
{inp}
    counter log prefix "{DROP_PREFIX}" level info drop comment "NET-01 LOG-03 the gateway offers only the apt proxy"
  }}
}}
"""


# --- applying it -----------------------------------------------------------------------


def _bridge_addrs(name: str) -> list[str] | None:
    proc = run(["ip", "-o", "-4", "addr", "show", "dev", name], "networks", check=False)
    if proc.returncode != 0:
        return None
    return [line.split()[3] for line in proc.stdout.splitlines()]


def ensure_bridges(state: LabState) -> None:
    for name, addr in bridges().items():
        found = _bridge_addrs(name)
        if found is None:
            run(["ip", "link", "add", name, "type", "bridge"], f"networks: create bridge {name}")
            found = []
        elif name not in state.bridges and found and addr not in found:
            raise StepError(
                f"networks: a bridge {name} already exists with addresses {found} that the lab did not set; "
                "remove it or free the name, then re-run `billkit up`"
            )
        if name not in state.bridges:
            state.bridges.append(name)
            state.save()
        if addr not in found:
            run(["ip", "addr", "add", addr, "dev", name], f"networks: address {addr} on {name}")
        run(["ip", "link", "set", name, "up"], f"networks: bring {name} up")


def remove_bridges(state: LabState) -> None:
    for name in list(state.bridges):
        if _bridge_addrs(name) is not None:
            run(["ip", "link", "del", name], f"down: delete bridge {name}")
        state.bridges.remove(name)
        state.save()


def ensure_sysctls(state: LabState) -> None:
    for key, want in SYSCTLS.items():
        path = Path("/proc/sys") / key.replace(".", "/")
        current = path.read_text().strip()
        if current != want:
            state.sysctl.setdefault(key, current)
            state.save()
            path.write_text(want)


def restore_sysctls(state: LabState) -> None:
    for key, old in list(state.sysctl.items()):
        (Path("/proc/sys") / key.replace(".", "/")).write_text(old)
        del state.sysctl[key]
        state.save()


def nft_table_exists() -> bool:
    return run(["nft", "list", "table", "inet", NFT_TABLE], "firewall", check=False).returncode == 0


def ensure_nft(state: LabState, lab_dir: Path) -> None:
    """Replace the lab's table atomically with the one rendered from the topology."""
    text = ruleset()
    if nft_table_exists():
        text = f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n" + text
    path = lab_dir / "nftables.conf"
    path.write_text(text)
    state.nft_table = True
    state.save()
    run(["nft", "-f", str(path)], "firewall: load the lab's nft table")


def remove_nft(state: LabState) -> None:
    if nft_table_exists():
        run(["nft", "delete", "table", "inet", NFT_TABLE], "down: delete nft table")
    state.nft_table = False
    state.save()


def lab_addresses() -> list[str]:
    return [h.address for h in lab_hosts()]
