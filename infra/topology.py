"""The network topology of a billkit environment: pure data and pure functions.

One model, used three ways: the Pulumi program derives security groups and NACLs from it,
the local lab derives its nftables forward rules from it, and the segmentation test derives
its must-connect / must-be-refused matrix from it. Nothing else in the kit lists ports.

No Pulumi import here: this module is imported by the lab, the tests and the CLI.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

Protocol = Literal["tcp", "udp", "vrrp"]
Realm = Literal["aws", "lab"]
BOTH: frozenset[Realm] = frozenset({"aws", "lab"})
LAB_ONLY: frozenset[Realm] = frozenset({"lab"})
AWS_ONLY: frozenset[Realm] = frozenset({"aws"})


@dataclass(frozen=True)
class Tier:
    """A network tier: one subnet per AZ in AWS, one bridge in the lab."""

    name: str
    purpose: str
    lab_cidr: str
    # Index of this tier's block inside the VPC (see aws_subnets).
    aws_index: int
    # public: subnets routed to an internet gateway (edge only).
    public: bool = False
    # egress: outbound internet through NAT (app only); data and management have none.
    egress: bool = False


@dataclass(frozen=True)
class Role:
    """A host role; in the lab each role has one or more nspawn hosts."""

    name: str
    tier: str
    purpose: str
    lab_hosts: tuple[str, ...]
    # What realises the role in AWS (a managed service has no host to configure).
    aws_realised_by: str


@dataclass(frozen=True)
class Flow:
    """One allowed flow. Everything not listed is refused (and logged)."""

    src: str  # a role name, or a pseudo-endpoint: internet, operator, gateway
    dst: str
    port: int
    protocol: Protocol
    purpose: str
    controls: tuple[str, ...]
    realms: frozenset[Realm] = BOTH


# Pseudo-endpoints: not hosts of the topology, but ends of flows.
INTERNET = "internet"  # untrusted users; in the lab, the machine's published port
OPERATOR = "operator"  # administrators; in the lab, the machine itself (the controller)
GATEWAY = "gateway"  # the lab's router, which runs the apt caching proxy
PSEUDO_ENDPOINTS = (INTERNET, OPERATOR, GATEWAY)
# AWS only: the interface VPC endpoints (KMS, SSM, logs, Secrets Manager) in the management tier.
AWS_APIS = "aws-apis"

TIERS: tuple[Tier, ...] = (
    Tier("edge", "TLS termination and the web application firewall", "10.77.10.0/24", 0, public=True),
    Tier("app", "the billing application", "10.77.20.0/24", 1, egress=True),
    Tier("data", "key management and the database (the CDE core)", "10.77.30.0/24", 2),
    Tier("management", "backups and operations", "10.77.40.0/24", 3),
)

ROLES: tuple[Role, ...] = (
    Role("waf", "edge", "nginx + ModSecurity CRS in front of the app", ("edge-1", "edge-2"), "ALB + WAFv2 web ACL"),
    Role("app", "app", "the billing app", ("app-1", "app-2"), "EC2 instances"),
    Role("vault", "data", "OpenBao cluster (raft)", ("vault-1", "vault-2", "vault-3"), "EC2 instances"),
    Role("db", "data", "PostgreSQL 15", ("db-1",), "RDS PostgreSQL"),
    Role("backup", "management", "S3-compatible backup store", ("backup-1",), "AWS Backup + S3"),
    Role("mon", "management", "Prometheus, Alertmanager and the operators' alert mailbox", ("mon-1",), "EC2 instances"),
)

# Ports, once.
HTTPS = 443
HTTP = 80
APP_PORT = 8443
VAULT_API = 8200
VAULT_CLUSTER = 8201
POSTGRES = 5432
SSH = 22
APT_PROXY = 3142
# Monitoring: scraped over mutual TLS by mon-1; operators reach Prometheus and Alertmanager over TLS.
NODE_EXPORTER = 9100
APP_METRICS = 9464
PROMETHEUS = 9090
ALERTMANAGER = 9093
# VRRP is an IP protocol of its own (112): no port. Flows with it are matched by protocol alone.
VRRP_NO_PORT = 0
# The machine's loopback port that the lab publishes for users (to the edge's floating address, port 443).
LAB_PUBLISHED_HTTPS = 9443


def _realms_of(role_name: str) -> frozenset[Realm]:
    """Where a role has hosts of its own: a role realised by a managed service has none in AWS."""
    by = next(r.aws_realised_by for r in ROLES if r.name == role_name)
    return BOTH if by == "EC2 instances" else LAB_ONLY


FLOWS: tuple[Flow, ...] = (
    Flow(INTERNET, "waf", HTTPS, "tcp", "users reach the app over HTTPS", ("ENC-01", "NET-06")),
    Flow(INTERNET, "waf", HTTP, "tcp", "plain HTTP, only to redirect to HTTPS", ("ENC-04",)),
    # The lab's two edge hosts hold one floating address between them (keepalived); in AWS the ALB is managed.
    Flow(
        "waf",
        "waf",
        VRRP_NO_PORT,
        "vrrp",
        "edge hosts elect the holder of the floating address",
        ("NET-06", "PAT-04"),
        LAB_ONLY,
    ),  # fmt: skip
    Flow("waf", "app", APP_PORT, "tcp", "WAF proxies to the app over TLS", ("ENC-01", "NET-02")),
    Flow("app", "vault", VAULT_API, "tcp", "app uses transit and AppRole over TLS", ("ENC-03", "RBAC-08")),
    Flow("app", "db", POSTGRES, "tcp", "app queries the database over TLS", ("ENC-02", "RBAC-05")),
    Flow("vault", "vault", VAULT_API, "tcp", "raft join and request forwarding", ("ENC-03", "BAK-08")),
    Flow("vault", "vault", VAULT_CLUSTER, "tcp", "raft replication over mutual TLS", ("ENC-03", "BAK-08")),
    Flow("vault", "db", POSTGRES, "tcp", "database secrets engine issues dynamic credentials", ("RBAC-05",)),
    Flow("db", "vault", VAULT_API, "tcp", "db host fetches its certificate and volume key", ("ENC-05", "EAR-01")),
    # In AWS the ALB's certificate comes from ACM: the load balancer never calls Vault.
    Flow("waf", "vault", VAULT_API, "tcp", "edge fetches its certificate from the PKI", ("ENC-05",), LAB_ONLY),
    Flow("backup", "vault", VAULT_API, "tcp", "backup host fetches its certificate", ("ENC-05",)),
    Flow("db", "backup", HTTPS, "tcp", "pgBackRest pushes encrypted WAL and backups", ("BAK-02", "BAK-04")),
    Flow("vault", "backup", HTTPS, "tcp", "encrypted raft snapshots", ("BAK-08",)),
    # Administration: SSM in AWS, SSH with the lab's own key or CA certificate in the lab.
    *(
        Flow(OPERATOR, role.name, SSH, "tcp", "operator SSH (keys or CA certificates only)", ("HRD-01",), LAB_ONLY)
        for role in ROLES
    ),
    Flow(OPERATOR, "vault", VAULT_API, "tcp", "operators configure Vault (userpass + TOTP)", ("MFA-03",)),
    Flow(OPERATOR, "db", POSTGRES, "tcp", "operators and restore tests reach the database over TLS", ("ENC-02",)),
    Flow(OPERATOR, "backup", HTTPS, "tcp", "operators read the backup store", ("BAK-05",)),
    # Monitoring: mon-1 scrapes every host's node exporter and probes every TLS service (MON-01, MON-02).
    *(
        Flow(
            "mon",
            r.name,
            NODE_EXPORTER,
            "tcp",
            "host metrics over mutual TLS",
            ("MON-01", "MON-02"),
            _realms_of(r.name),
        )
        for r in ROLES
        if r.name != "mon"
    ),  # fmt: skip
    Flow("mon", "app", APP_METRICS, "tcp", "the app's security counters over mutual TLS", ("MON-01", "MON-03")),
    Flow("mon", "app", APP_PORT, "tcp", "TLS probe: endpoint health and certificate expiry", ("MON-01", "ENC-05")),
    Flow("mon", "vault", VAULT_API, "tcp", "OpenBao telemetry, health and certificate probes", ("MON-01", "MON-02")),
    Flow("mon", "db", POSTGRES, "tcp", "TLS probe: database certificate expiry", ("MON-01", "ENC-05")),
    Flow("mon", "waf", HTTPS, "tcp", "TLS probe of the edge", ("MON-01", "ENC-05"), LAB_ONLY),
    Flow("mon", "backup", HTTPS, "tcp", "TLS probe of the backup store", ("MON-01", "ENC-05"), LAB_ONLY),
    Flow(OPERATOR, "mon", PROMETHEUS, "tcp", "operators read Prometheus (TLS, basic auth)", ("MON-01",)),
    Flow(OPERATOR, "mon", ALERTMANAGER, "tcp", "operators read and silence alerts (TLS, basic auth)", ("MON-01",)),
    Flow(
        "mon",
        AWS_APIS,
        HTTPS,
        "tcp",
        "SNS alert delivery and SSM agent via VPC endpoints",
        ("MON-01", "NET-08"),
        AWS_ONLY,
    ),  # fmt: skip
    # Packages: the only path to the mirror is the gateway's apt caching proxy.
    *(
        Flow(role.name, GATEWAY, APT_PROXY, "tcp", "Debian packages via the apt caching proxy", ("PAT-01",), LAB_ONLY)
        for role in ROLES
    ),
    # AWS: private tiers reach AWS APIs through VPC endpoints (SSM replaces SSH; KMS unseals Vault).
    Flow(
        "app",
        AWS_APIS,
        HTTPS,
        "tcp",
        "SSM agent, KMS and CloudWatch Logs via VPC endpoints",
        ("NET-08", "NET-09"),
        AWS_ONLY,
    ),
    Flow(
        "vault",
        AWS_APIS,
        HTTPS,
        "tcp",
        "KMS auto-unseal and SSM agent via VPC endpoints",
        ("EAR-07", "NET-08"),
        AWS_ONLY,
    ),
    # AWS: only the app tier has egress, through NAT (payment processor API, package repositories).
    Flow("app", INTERNET, HTTPS, "tcp", "payment processor API and packages through NAT", ("NET-01",), AWS_ONLY),
)


def tier(name: str) -> Tier:
    for t in TIERS:
        if t.name == name:
            return t
    raise KeyError(f"unknown tier {name!r}; tiers are {[t.name for t in TIERS]}")


def role(name: str) -> Role:
    for r in ROLES:
        if r.name == name:
            return r
    raise KeyError(f"unknown role {name!r}; roles are {[r.name for r in ROLES]}")


def flows(realm: Realm | None = None) -> tuple[Flow, ...]:
    """The allowed flows, optionally only those that exist in one realm."""
    return tuple(f for f in FLOWS if realm is None or realm in f.realms)


def flows_into(dst: str, realm: Realm | None = None) -> tuple[Flow, ...]:
    return tuple(f for f in flows(realm) if f.dst == dst)


def flows_from(src: str, realm: Realm | None = None) -> tuple[Flow, ...]:
    return tuple(f for f in flows(realm) if f.src == src)


# --- the lab ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LabHost:
    name: str
    role: str
    tier: str
    address: str  # without prefix length
    prefixlen: int
    gateway: str


def lab_gateway(tier_name: str) -> str:
    """The machine's address on a tier's bridge: the first host of the tier's network."""
    return str(next(ipaddress.ip_network(tier(tier_name).lab_cidr).hosts()))


def lab_floating_address(role_name: str) -> str:
    """The address a role's hosts share (keepalived moves it): .10 of the role's tier, below its hosts."""
    return str(ipaddress.ip_network(tier(role(role_name).tier).lab_cidr).network_address + 10)


def lab_hosts() -> tuple[LabHost, ...]:
    """Every lab host with its address: .11, .12, … in its tier, in role order."""
    out: list[LabHost] = []
    used: dict[str, int] = {}
    for r in ROLES:
        net = ipaddress.ip_network(tier(r.tier).lab_cidr)
        for host in r.lab_hosts:
            n = used.get(r.tier, 0)
            used[r.tier] = n + 1
            out.append(
                LabHost(host, r.name, r.tier, str(net.network_address + 11 + n), net.prefixlen, lab_gateway(r.tier))
            )
    return tuple(out)


def lab_host(name: str) -> LabHost:
    for h in lab_hosts():
        if h.name == name:
            return h
    raise KeyError(f"unknown lab host {name!r}; hosts are {[h.name for h in lab_hosts()]}")


def hosts_of(role_name: str) -> tuple[LabHost, ...]:
    return tuple(h for h in lab_hosts() if h.role == role_name)


@dataclass(frozen=True)
class Probe:
    """One cell of the segmentation matrix: from src_host, connect to dst_host:port."""

    src_host: str
    dst_host: str
    port: int
    protocol: Protocol
    allowed: bool
    controls: tuple[str, ...]


def topology_ports() -> tuple[tuple[int, Protocol], ...]:
    """Every (port, protocol) the topology mentions that a connection can probe, sorted.

    VRRP has no port to connect to: the edge failover checks prove that flow.
    """
    return tuple(sorted({(f.port, f.protocol) for f in FLOWS if f.protocol != "vrrp"}))


def segmentation_matrix() -> tuple[Probe, ...]:
    """Every host-to-host pair and every topology port: allowed iff a lab flow grants it.

    A flow from a role to itself (vault to vault) allows each host to reach its peers, never
    needed for itself; a host is never probed against itself.
    """
    allowed = {(f.src, f.dst, f.port, f.protocol): f.controls for f in flows("lab")}
    probes: list[Probe] = []
    for src in lab_hosts():
        for dst in lab_hosts():
            if src.name == dst.name:
                continue
            for port, proto in topology_ports():
                key = (src.role, dst.role, port, proto)
                ctrls = allowed.get(key, ("NET-02",))
                probes.append(Probe(src.name, dst.name, port, proto, key in allowed, ctrls))
    return tuple(probes)


# --- AWS -------------------------------------------------------------------------------

VPC_CIDR_DEFAULT = "10.40.0.0/16"


def aws_subnets(vpc_cidr: str = VPC_CIDR_DEFAULT, az_count: int = 3) -> dict[str, tuple[str, ...]]:
    """Split the VPC into one block per tier, then one subnet per AZ inside each block.

    The VPC is cut into 4 equal tier blocks (edge, app, data, management), each block into
    4 equal AZ subnets, so up to 4 AZs fit and the layout never shifts when AZs are added.
    """
    if not 1 <= az_count <= 4:
        raise ValueError(f"az_count must be between 1 and 4, got {az_count}")
    vpc = ipaddress.ip_network(vpc_cidr)
    if vpc.prefixlen > 24:
        raise ValueError(f"VPC {vpc_cidr} is too small: use a /24 or larger (a /16 is the default)")
    blocks = list(vpc.subnets(prefixlen_diff=2))
    out: dict[str, tuple[str, ...]] = {}
    for t in TIERS:
        per_az = list(blocks[t.aws_index].subnets(prefixlen_diff=2))
        out[t.name] = tuple(str(s) for s in per_az[:az_count])
    return out


# --- AWS security groups and network ACLs, derived from flows("aws") ---------------------

ANY_IPV4 = "0.0.0.0/0"
# Return traffic of TCP connections (stateless NACLs need it; Linux and AWS services use this range).
EPHEMERAL_PORTS = (1024, 65535)


@dataclass(frozen=True)
class AwsEndpoint:
    """How one end of a flow exists in AWS.

    sg: the security group that carries the role (None: no group, e.g. the internet);
    tiers: the tiers whose subnets hold it (the NACL peers); cidr: a fixed peer instead;
    prefix_list: an AWS-managed prefix list as the security-group peer (S3 gateway endpoint);
    initiates: False for a managed service that opens no connection from inside the VPC.
    """

    sg: str | None
    tiers: tuple[str, ...] = ()
    cidr: str | None = None
    prefix_list: str | None = None
    initiates: bool = True


AWS_ENDPOINTS: dict[str, AwsEndpoint] = {
    "waf": AwsEndpoint("waf", ("edge",)),  # the internet-facing ALB
    "app": AwsEndpoint("app", ("app",)),
    "vault": AwsEndpoint("vault", ("data",)),  # the instances and their internal NLB
    "mon": AwsEndpoint("mon", ("management",)),
    "db": AwsEndpoint("db", ("data",), initiates=False),  # RDS opens no connection of its own
    # AWS Backup and S3: reached through the S3 gateway endpoint; the data tier has no internet route.
    "backup": AwsEndpoint(None, cidr=ANY_IPV4, prefix_list="s3", initiates=False),
    AWS_APIS: AwsEndpoint("endpoints", ("management",)),
    INTERNET: AwsEndpoint(None, cidr=ANY_IPV4),
    # Operators arrive from the management tier (client VPN or SSM port forwarding), never from the internet.
    OPERATOR: AwsEndpoint(None, ("management",)),
}


def aws_security_groups() -> tuple[str, ...]:
    """The security groups of the AWS stack, one per role that owns network interfaces."""
    return tuple(sorted({e.sg for e in AWS_ENDPOINTS.values() if e.sg}))


@dataclass(frozen=True)
class SgRule:
    """One security-group rule: exactly one of peer_sg, peer_cidr, peer_prefix_list is set."""

    sg: str
    direction: Literal["ingress", "egress"]
    port: int
    protocol: Protocol
    description: str
    controls: tuple[str, ...]
    peer_sg: str | None = None
    peer_cidrs: tuple[str, ...] = ()
    peer_prefix_list: str | None = None

    @property
    def key(self) -> str:
        if self.peer_cidrs == (ANY_IPV4,):
            cidrs = "anywhere"
        else:
            cidrs = "-".join(c.replace(".", "-").replace("/", "-") for c in self.peer_cidrs)
        peer = self.peer_sg or self.peer_prefix_list or cidrs
        return f"{self.sg}-{self.direction}-{self.protocol}{self.port}-{peer}"


def _aws_endpoint(name: str) -> AwsEndpoint:
    try:
        return AWS_ENDPOINTS[name]
    except KeyError:
        raise KeyError(f"flow end {name!r} has no AWS realisation; add it to AWS_ENDPOINTS") from None


def aws_tier_blocks(vpc_cidr: str = VPC_CIDR_DEFAULT) -> dict[str, str]:
    """Each tier's whole block inside the VPC (the AZ subnets of aws_subnets lie inside it)."""
    blocks = list(ipaddress.ip_network(vpc_cidr).subnets(prefixlen_diff=2))
    return {t.name: str(blocks[t.aws_index]) for t in TIERS}


def _tier_cidrs(tiers: tuple[str, ...], vpc_cidr: str, az_count: int) -> tuple[str, ...]:
    del az_count  # one block per tier whatever the number of AZs: rules stay few and stable
    blocks = aws_tier_blocks(vpc_cidr)
    return tuple(blocks[t] for t in tiers)


def aws_sg_rules(vpc_cidr: str = VPC_CIDR_DEFAULT, az_count: int = 3) -> tuple[SgRule, ...]:
    """Every security-group rule of the AWS stack, from flows("aws"); nothing else is allowed.

    A flow becomes an egress rule on the source's group and an ingress rule on the
    destination's group (groups are stateful: return traffic needs no rule). The peer is the
    other end's group when it has one, else its CIDRs or prefix list.
    """
    rules: dict[str, SgRule] = {}

    def peer(end: AwsEndpoint) -> dict[str, object]:
        if end.sg:
            return {"peer_sg": end.sg}
        if end.prefix_list:
            return {"peer_prefix_list": end.prefix_list}
        if end.cidr:
            return {"peer_cidrs": (end.cidr,)}
        return {"peer_cidrs": _tier_cidrs(end.tiers, vpc_cidr, az_count)}

    for f in flows("aws"):
        src, dst = _aws_endpoint(f.src), _aws_endpoint(f.dst)
        if not src.initiates:
            continue
        text = f"{f.src} to {f.dst}: {f.purpose}"
        if src.sg:
            r = SgRule(src.sg, "egress", f.port, f.protocol, text, f.controls, **peer(dst))  # type: ignore[arg-type]
            rules.setdefault(r.key, r)
        if dst.sg:
            r = SgRule(dst.sg, "ingress", f.port, f.protocol, text, f.controls, **peer(src))  # type: ignore[arg-type]
            rules.setdefault(r.key, r)
    return tuple(rules[k] for k in sorted(rules))


@dataclass(frozen=True)
class NaclRule:
    """One network ACL entry of a tier (stateless: return traffic needs its own entry)."""

    tier: str
    egress: bool
    rule_number: int
    protocol: Protocol
    cidr: str
    from_port: int
    to_port: int
    purpose: str


def aws_nacl_rules(vpc_cidr: str = VPC_CIDR_DEFAULT, az_count: int = 3) -> dict[str, tuple[NaclRule, ...]]:
    """Network ACL entries per tier, from flows("aws"), with ephemeral return traffic.

    For a flow from tier A to tier B on port p: A allows egress to B's CIDRs on p and ingress
    of B's replies on the ephemeral range; B allows ingress from A on p and egress of its
    replies to A on the ephemeral range. Everything else hits the ACL's implicit deny.
    """
    entries: dict[str, dict[tuple[bool, str, int, int, str], str]] = {t.name: {} for t in TIERS}

    def cidrs(end: AwsEndpoint) -> tuple[str, ...]:
        return (end.cidr,) if end.cidr else _tier_cidrs(end.tiers, vpc_cidr, az_count)

    lo, hi = EPHEMERAL_PORTS
    for f in flows("aws"):
        src, dst = _aws_endpoint(f.src), _aws_endpoint(f.dst)
        if not src.initiates:
            continue
        for t in src.tiers:
            for c in cidrs(dst):
                entries[t].setdefault((True, f.protocol, f.port, f.port, c), f"to {f.dst}: {f.purpose}")
                entries[t].setdefault((False, f.protocol, lo, hi, c), f"replies from {f.dst}")
        for t in dst.tiers:
            for c in cidrs(src):
                entries[t].setdefault((False, f.protocol, f.port, f.port, c), f"from {f.src}: {f.purpose}")
                entries[t].setdefault((True, f.protocol, lo, hi, c), f"replies to {f.src}")
        if f.dst == INTERNET:
            # Egress to the internet crosses the NAT gateways in the public (edge) subnets.
            for nat_tier in (t.name for t in TIERS if t.public):
                for t in src.tiers:
                    if not tier(t).egress:
                        raise ValueError(f"flow {f.src} -> internet, but tier {t} has no egress in TIERS")
                    block = aws_tier_blocks(vpc_cidr)[t]
                    rows = entries[nat_tier]
                    rows.setdefault((False, f.protocol, f.port, f.port, block), f"NAT for {f.src}: {f.purpose}")
                    rows.setdefault((True, f.protocol, f.port, f.port, ANY_IPV4), f"NAT for {f.src}: {f.purpose}")
                    rows.setdefault((False, f.protocol, lo, hi, ANY_IPV4), "replies to NAT")
                    rows.setdefault((True, f.protocol, lo, hi, block), f"NAT replies to {f.src}")
    out: dict[str, tuple[NaclRule, ...]] = {}
    for t, rows in entries.items():
        rules: list[NaclRule] = []
        numbers = {True: 100, False: 100}
        for (egress, proto, p_lo, p_hi, cidr), purpose in sorted(rows.items()):
            rules.append(NaclRule(t, egress, numbers[egress], proto, cidr, p_lo, p_hi, purpose))  # type: ignore[arg-type]
            numbers[egress] += 10
        out[t] = tuple(rules)
    return out


def internet_ports(realm: Realm = "aws") -> frozenset[tuple[int, Protocol]]:
    """The (port, protocol) pairs the internet may reach: the only public ingress allowed."""
    return frozenset((f.port, f.protocol) for f in flows(realm) if f.src == INTERNET)


def admin_ports() -> frozenset[int]:
    """Ports used only for host administration (SSH): never open in AWS, where SSM replaces them."""
    return frozenset(f.port for f in FLOWS if f.realms == LAB_ONLY and f.src == OPERATOR)
