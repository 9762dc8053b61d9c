"""The site inventory: one YAML file describing controllers, computes and the services
on each, validated into typed models before anything connects.

Secrets are never inline: a credential names an environment variable or a file.
Errors name the field path, e.g. ``controllers[1].galera.address: not an IP address``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chaos.errors import ConfigError
from chaos.targets import PLACE_SCHEMES

# Where the local lab (the separate ``chaoslab`` package) keeps its site: the harness
# knows the path of the inventory the lab writes, never the lab's code.
LAB_DIR = Path("/var/lib/chaos-lab")


def lab_dir() -> Path:
    """``$CHAOS_LAB_DIR`` or /var/lib/chaos-lab."""
    return Path(os.environ.get("CHAOS_LAB_DIR") or LAB_DIR)


def lab_inventory_path() -> Path:
    """The inventory ``chaos lab up`` writes: the default site when none is given."""
    return lab_dir() / "inventory.yaml"


def _ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("not an IP address") from None
    return value


def _target(value: str) -> str:
    scheme, sep, _ = value.partition("://")
    if not sep or scheme not in PLACE_SCHEMES:
        raise ValueError(f"not a target URL (schemes: {', '.join(PLACE_SCHEMES)})")
    return value


IP = Annotated[str, AfterValidator(_ip)]
TargetURL = Annotated[str, AfterValidator(_target)]
Port = Annotated[int, Field(ge=1, le=65535)]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
# How the harness reaches a service's port: "address" — the host's address (host
# networking, a process, a container); "port-forward" — through the Kubernetes API to
# the pod its target selects, as ``kubectl port-forward`` does (a pod on a pod network
# the harness has no route into).
Reach = Literal["address", "port-forward"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(Model):
    """A secret by reference: ``env: VAR`` or ``file: /path`` — never the value itself."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file")
        return self

    def reveal(self) -> str:
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(f"secret: environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"secret: cannot read {self.file}: {exc.strerror}") from exc


class Credential(Model):
    user: str = Field(min_length=1)
    password: Secret


class ProjectCredential(Credential):
    """An OpenStack user and the project it scopes its tokens to."""

    project: str = "admin"
    user_domain: str = "Default"
    project_domain: str = "Default"


class Credentials(Model):
    db: Credential
    rabbitmq: Credential
    erlang_cookie: Secret
    # OpenStack's API, where the site runs it (a controller's ``keystone`` section)
    openstack: ProjectCredential | None = None


class SshAccess(Model):
    user: str = "root"
    port: Port = 22
    key_file: Path | None = None


class GaleraNode(Model):
    """A MariaDB Galera node: SQL endpoint and how to act on its process."""

    port: Port = 3306
    reach: Reach = "address"
    target: TargetURL  # where its process lives: local://, ssh://…, docker://…, k8s://…
    datadir: str
    pidfile: str | None = None
    config: str | None = None
    start: str | None = None  # shell command that starts the node as is


class RabbitNode(Model):
    node: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+@[A-Za-z0-9_.-]+$")]
    amqp_port: Port = 5672
    management_port: Port | None = 15672
    reach: Reach = "address"
    target: TargetURL
    data_dir: str | None = None  # RABBITMQ_MNESIA_BASE: the node's own dir is <data_dir>/<node>
    pidfile: str | None = None
    start: str | None = None
    # shell prefix under which RabbitMQ's CLI tools reach this node, e.g.
    # "set -a; . /etc/rabbitmq/node.env; set +a; /usr/lib/rabbitmq/bin/"
    cli: str = "/usr/lib/rabbitmq/bin/"


class KeystoneNode(Model):
    """Keystone (OpenStack Identity) on a controller: its public API and its process."""

    url: Annotated[str, Field(pattern=r"^https?://")]  # the public API, .../v3
    target: TargetURL
    pidfile: str | None = None
    start: str | None = None


def _http_url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL with a host")
    return value


HttpURL = Annotated[str, AfterValidator(_http_url)]


class CloudAuth(Model):
    """The ``auth:`` of a clouds.yaml entry (password auth), the password by reference."""

    auth_url: HttpURL  # keystone's public API, .../v3
    username: str = Field(min_length=1)
    password: Secret
    project_name: str = Field(min_length=1)
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"


class OpenStackCloud(Model):
    """An OpenStack cloud as its users reach it, in clouds.yaml's words: the site's
    ``openstack:`` section. The OpenStack workload (``chaos.cloud``) runs against it;
    ``image`` and ``flavor`` name what its servers boot from (small ones)."""

    auth: CloudAuth
    region_name: str | None = None
    interface: Literal["public", "internal", "admin"] = "public"
    verify: bool = True  # TLS certificates checked
    cacert: Path | None = None  # a CA bundle of the site's own
    image: str | None = None
    flavor: str | None = None

    @model_validator(mode="after")
    def _ca_only_when_verifying(self) -> OpenStackCloud:
        if self.cacert is not None and not self.verify:
            raise ValueError("cacert: not with verify: false")
        return self


class Docker(Model):
    socket: str = "unix:///var/run/docker.sock"
    pidfile: str | None = None
    start: str | None = None  # shell command that starts the daemon as is

    @field_validator("socket")
    @classmethod
    def _unix(cls, value: str) -> str:
        if not value.startswith("unix:///"):
            raise ValueError("not a unix:/// socket URL")
        return value


class Libvirt(Model):
    """libvirtd of a compute host: in a container or pod (``container``), or a process of
    the host itself (``pidfile`` and ``start``, as a distribution's service runs it)."""

    uri: Annotated[str, Field(pattern=r"^qemu(\+tcp|\+ssh|\+tls)?://")]
    container: TargetURL | None = None  # the container or pod running libvirtd
    pidfile: str | None = None
    start: str | None = None  # shell command that starts libvirtd as is

    @model_validator(mode="after")
    def _somewhere(self) -> Libvirt:
        if self.container is None and not (self.pidfile and self.start):
            raise ValueError("give either container, or pidfile and start (libvirtd as a "
                             "process of the host)")
        return self


class Host(Model):
    name: Name
    address: IP
    # How the harness reaches the host itself, for the faults and probes that act there
    # (a docker daemon, iptables, the qemu processes): "ssh" (the ssh section; an ssh
    # section alone means ssh) or "local" (the host is this machine, as every lab host
    # is). Unset: the inventory gives no way, and whatever needs one refuses, naming it.
    access: Literal["ssh", "local"] | None = None
    ssh: SshAccess | None = None

    @model_validator(mode="before")
    @classmethod
    def _ssh_means_ssh(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("access") is None and data.get("ssh") is not None:
            return {**data, "access": "ssh"}
        if data.get("access") == "ssh" and data.get("ssh") is None:
            return {**data, "ssh": {}}  # root, port 22, the agent's keys
        return data

    @field_validator("ssh")
    @classmethod
    def _ssh_only_with_ssh(cls, value: SshAccess | None, info: ValidationInfo) -> SshAccess | None:
        if value is not None and info.data.get("access") == "local":
            raise ValueError("not with access: local (the host is this machine)")
        return value


class Controller(Host):
    galera: GaleraNode | None = None
    rabbitmq: RabbitNode | None = None
    keystone: KeystoneNode | None = None


class Compute(Host):
    docker: Docker | None = None
    libvirt: Libvirt | None = None
    # what the site's operators expect of VMs when libvirt's container dies; the lab
    # documents its deliberately wrong hosts here, a real site says "survive"
    expect_vms: Literal["survive", "die"] = "survive"


class Kubernetes(Model):
    """How to reach the API server: a kubeconfig file, or an address and a token."""

    kubeconfig: Path | None = None
    context: str | None = None
    api: Annotated[str, Field(pattern=r"^https?://")] | None = None
    token: Secret | None = None
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Kubernetes:
        if (self.kubeconfig is None) == (self.api is None):
            raise ValueError("give either kubeconfig or api (with token)")
        return self


class Cluster(Model):
    """Who brings a cluster back after a fault, and what the harness watches then.

    ``harness``: the harness's own procedures (``recovery/``) act — the process lab, the
    seed's topology, kolla-style sites. ``platform``: a start script, an operator or
    the kubelet does; the harness injects the fault and watches, and acts only when an
    operator asks (``chaos recover … --take-over``)."""

    recovered_by: Literal["harness", "platform"] = "harness"
    # which platform's recovery it is: what the harness watches
    platform: Literal["openstack-helm", "mariadb-operator", "rabbitmq-operator"] | None = None
    namespace: str | None = None
    statefulset: str | None = None
    # openstack-helm's MariaDB cluster state: the ConfigMap ``<release>-mariadb-state``
    state_configmap: str | None = None
    # how long the platform is given to recover before the verdict fails
    deadline_seconds: Annotated[float, Field(gt=0, le=3600)] = 600.0

    @model_validator(mode="after")
    def _platform_says_what(self) -> Cluster:
        if self.recovered_by == "platform" and self.platform is None:
            raise ValueError("recovered_by: platform needs platform (which one recovers)")
        return self


class Site(Model):
    name: Name
    kind: Literal["process", "kubernetes"] = "process"
    # Where a partition's packet filter rules go: "host" — on the partitioned host,
    # through its access; "local" — on this machine, because every host of the site is
    # an address of it (the lab), and this one kernel carries all of their traffic.
    firewall: Literal["host", "local"] = "host"
    credentials: Credentials
    kubernetes: Kubernetes | None = None
    # OpenStack as its users reach it (clouds.yaml style), where the site runs it
    openstack: OpenStackCloud | None = None
    controllers: list[Controller] = Field(min_length=1)
    computes: list[Compute] = []
    # per cluster (a service's name: galera, rabbitmq), who recovers it; unnamed: the harness
    clusters: dict[str, Cluster] = {}

    @model_validator(mode="after")
    def _port_forward_needs_a_pod(self) -> Site:
        for i, c in enumerate(self.controllers):
            for section in (c.galera, c.rabbitmq):
                if section is not None and section.reach == "port-forward" \
                        and not section.target.startswith("k8s://"):
                    name = "galera" if section is c.galera else "rabbitmq"
                    raise ValueError(f"controllers[{i}].{name}.reach: port-forward needs a "
                                     "k8s:// target")
        if self.clusters and self.kubernetes is None and any(
                c.recovered_by == "platform" for c in self.clusters.values()):
            raise ValueError("clusters: a platform's recovery is watched through the "
                             "Kubernetes API: give a kubernetes section")
        return self

    @field_validator("clusters")
    @classmethod
    def _known_services(cls, value: dict[str, Cluster]) -> dict[str, Cluster]:
        from chaos.services import SERVICES  # the table's modules read this one

        for name in value:
            if name not in SERVICES:
                raise ValueError(f"{name}: not a service (services: {', '.join(SERVICES)})")
            if not SERVICES[name].quorum:
                raise ValueError(f"{name}: not a cluster")
        # openstack-helm keeps MariaDB's cluster state in a ConfigMap (its RabbitMQ has
        # none: that cluster's recovery is watched through its pods alone)
        galera = value.get("galera")
        if galera is not None and galera.platform == "openstack-helm" \
                and galera.state_configmap is None:
            raise ValueError("galera: platform openstack-helm needs state_configmap "
                             "(<release>-mariadb-state)")
        return value

    def cluster(self, service: str) -> Cluster:
        """Who recovers ``service``'s cluster (the harness, unless the inventory says)."""
        return self.clusters.get(service) or Cluster()

    @model_validator(mode="after")
    def _unique_names(self) -> Site:
        seen: set[str] = set()
        for host in [*self.controllers, *self.computes]:
            if host.name in seen:
                raise ValueError(f"host name {host.name} is used twice")
            seen.add(host.name)
        return self

    def services(self) -> set[str]:
        """Which of the registered services run somewhere on the site."""
        from chaos.services import SERVICES  # the table's modules read this one

        hosts: list[Controller | Compute] = [*self.controllers, *self.computes]
        return {s.name for h in hosts for s in SERVICES.on(h)}

    def host(self, name: str) -> Controller | Compute:
        hosts: list[Controller | Compute] = [*self.controllers, *self.computes]
        for host in hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in [*self.controllers, *self.computes])
        raise ConfigError(f"no host named {name!r} in site {self.name} (hosts: {known})")


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _message(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line naming the first offending field; the count of others, if any."""
    errors = exc.errors()
    first = errors[0]
    loc = tuple(p for p in first["loc"] if p not in ("function-after[_ip(), str]",))
    line = f"{source}: {_path(loc)}: {_message(dict(first))}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more)"
    return line


def parse(data: object, source: str = "inventory") -> Site:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: not a mapping at the top level")
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load(path: Path | str) -> Site:
    """Read and validate an inventory file; any problem is one ConfigError line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return parse(data, str(path))
