"""The OpenStack workload's arithmetic (chaos.cloud): operations' success rate, the
longest error window per API, leftovers, placement held against nova; and the
inventory's ``openstack:`` section. Its lab test runs it on a real nova."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chaos import inventory
from chaos.cloud import (
    BootDelete,
    NovaHost,
    NovaHostVerdict,
    Operation,
    PlacementCheck,
    Request,
    boot_delete_where_named,
    cloud_config,
    judge,
    longest_error_window,
    placement_consistency,
)
from chaos.errors import ConfigError
from chaos.journal import Event, Journal

from .test_inventory import VALID

CLOUD: dict[str, Any] = {
    "auth": {"auth_url": "https://keystone.example.com:5000/v3", "username": "chaos",
             "password": {"env": "OS_PASSWORD"}, "project_name": "chaos"},
    "region_name": "RegionOne", "cacert": "/etc/ssl/site-ca.pem",
    "image": "cirros", "flavor": "m1.tiny",
}


def ops(good: int, bad: int) -> list[Operation]:
    return ([Operation(f"bd-{i}", True, 5.0, f"id-{i}") for i in range(good)]
            + [Operation(f"bd-x{i}", False, 1.0, None, "create", "HTTP 503")
               for i in range(bad)])


def reads(api: str, outcomes: str, every: float = 1.0, start: float = 0.0) -> list[Request]:
    """One request per ``every`` seconds: "." answered, "x" failed."""
    return [Request(start + i * every, api, "r", c == ".", 0.1, "" if c == "." else "boom")
            for i, c in enumerate(outcomes)]


# ---- the verdict's arithmetic ------------------------------------------------------

def test_all_good_passes() -> None:
    v = judge(ops(20, 0), reads("compute", "." * 60), end=60.0,
              placement=PlacementCheck(1, 0, 0), min_success=0.95, max_window=30)
    assert v.ok and v.success_rate == 1.0 and v.error_window == 0.0
    assert v.fields()["placement_ok"] is True and v.event == Event.ORACLE_OPENSTACK
    assert "20/20 operations" in v.summary()


def test_success_rate_counts_operations_not_requests() -> None:
    v = judge(ops(19, 1), reads("compute", "." * 10), end=10.0, min_success=0.95)
    assert v.success_rate == pytest.approx(0.95) and v.ok
    v = judge(ops(18, 2), reads("compute", "." * 10), end=10.0, min_success=0.95)
    assert v.success_rate == pytest.approx(0.90) and not v.ok
    assert not judge([], [], end=1.0).ok  # nothing done proves nothing


def test_error_window_is_per_api_from_first_failure_to_next_success() -> None:
    # nova's API fails from t=10 to t=25 while keystone answers all along: keystone's
    # successes do not cut nova's window short
    compute = reads("compute", "." * 10 + "x" * 15 + "." * 10)
    identity = reads("identity", "." * 35, start=0.5)
    assert longest_error_window([*compute, *identity], end=35.0) == (15.0, "compute")
    # still failing at the end: the window runs to the end
    assert longest_error_window(reads("compute", "...xx"), end=10.0) == (7.0, "compute")


def test_forty_seconds_of_errors_fails_the_verdict() -> None:
    """The broken case: nova's API down for 40 s, over the 30 s threshold."""
    requests = reads("compute", "." * 10 + "x" * 40 + "." * 10)
    v = judge(ops(20, 0), requests, end=60.0, min_success=0.95, max_window=30)
    assert v.error_window == 40.0 and v.error_window_api == "compute"
    assert not v.ok
    assert "longest error window 40.0s (compute) (wanted <= 30s)" in v.summary()
    assert v.first_error == "compute r: boom"


def test_leftovers_pass_when_removed_and_fail_when_not() -> None:
    removed = judge(ops(20, 0), [], end=1.0, left_behind=2, removed=2)
    assert removed.ok and removed.not_removed == 0
    assert "2 servers left behind (2 removed, 0 not)" in removed.summary()
    stuck = judge(ops(20, 0), [], end=1.0, left_behind=3, removed=1)
    assert stuck.not_removed == 2 and not stuck.ok


# ---- placement against nova --------------------------------------------------------

FLAVOR = {"VCPU": 1, "MEMORY_MB": 64}
ONE = {"VCPU": 1, "MEMORY_MB": 64, "DISK_GB": 1}


def test_placement_consistent() -> None:
    check = placement_consistency({"rp1": {"a": ONE, "b": ONE}, "rp2": {}},
                                  {"a": FLAVOR, "b": FLAVOR})
    assert check.ok and check.consumers == 2 and check.providers == 2


def test_an_allocation_with_no_instance_is_orphaned() -> None:
    check = placement_consistency({"rp1": {"a": ONE, "ghost": ONE}}, {"a": FLAVOR})
    assert not check.ok and check.orphaned == ("ghost",)
    assert "1 orphaned: ghost" in check.describe()
    v = judge(ops(20, 0), [], end=1.0, placement=check)
    assert not v.ok and "placement INCONSISTENT" in v.summary()
    # a migration's consumer is nova's too
    assert placement_consistency({"rp1": {"a": ONE, "mig": ONE}}, {"a": FLAVOR},
                                 others=frozenset({"mig"})).ok


def test_an_instance_allocated_twice_is_doubled() -> None:
    on_two = placement_consistency({"rp1": {"a": ONE}, "rp2": {"a": ONE}}, {"a": FLAVOR})
    assert not on_two.ok and on_two.doubled == ("a",)
    twice_its_flavor = placement_consistency(
        {"rp1": {"a": {"VCPU": 2, "MEMORY_MB": 128}}}, {"a": FLAVOR})
    assert twice_its_flavor.doubled == ("a",)


def test_an_instance_without_allocation_is_reported_not_failed() -> None:
    check = placement_consistency({"rp1": {}}, {"building": None})
    assert check.ok and check.unallocated == ("building",)
    assert not PlacementCheck(0, 0, 0, error="HTTP 403").ok


def test_the_journal_makes_junit_properties_of_it() -> None:
    journal = Journal()
    v = judge(ops(19, 1), reads("compute", "..xx.."), end=6.0, left_behind=1, removed=1,
              placement=PlacementCheck(1, 2, 2))
    journal.event(v.event, **v.fields())
    props = journal.properties()
    assert props["openstack_success_rate"] == 0.95
    assert props["openstack_error_window_seconds"] == 2.0
    assert props["openstack_servers_left"] == 1 and props["openstack_servers_not_removed"] == 0
    assert props["placement_consistent"] is True
    assert props["openstack_slowest_request_seconds"] == 0.1


def test_a_slow_create_counts_as_answered_and_is_named_the_slowest() -> None:
    """nova-api's create that waited out a cut RabbitMQ node (17.7 s, then 202) is what
    a user sees as a slow boot, not a failed one: answered, and named beside the
    verdict, which a request that timed out is too."""
    slow = Request(12.0, "compute", "create", True, 17.7)
    v = judge(ops(20, 0), [*reads("compute", "." * 30), slow], end=30.0)
    assert v.ok and v.requests_ok == v.requests and v.error_window == 0.0
    assert (v.slowest, v.slowest_what) == (17.7, "compute create")
    assert "slowest request 17.7s (compute create)" in v.summary()
    assert v.fields()["slowest"] == 17.7
    timed_out = Request(12.0, "compute", "create", False, 60.0, "ConnectTimeout: timed out")
    v = judge(ops(20, 0), [*reads("compute", "." * 30), timed_out], end=30.0)
    assert v.slowest_what == "compute create" and v.requests_ok == v.requests - 1
    assert judge([], [], end=1.0).slowest_what == ""


# ---- the inventory's openstack section ---------------------------------------------

def site(cloud: Any = CLOUD) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data["openstack"] = copy.deepcopy(cloud)
    return data


def test_an_openstack_section_is_the_workload_s_cloud() -> None:
    s = inventory.parse(site())
    config = cloud_config(s)
    assert config.auth_url == "https://keystone.example.com:5000/v3"
    assert (config.username, config.project_name, config.region_name) == (
        "chaos", "chaos", "RegionOne")
    assert config.user_domain_name == "Default" and config.verify
    assert str(config.cacert) == "/etc/ssl/site-ca.pem" and config.image == "cirros"
    assert "OS_PASSWORD" not in repr(config)  # the reference is not even shown
    workload = BootDelete(s)
    assert workload.prefix.startswith("chaos-bd-") and workload.flavor == "m1.tiny"
    assert "m1.tiny" in workload.describe()


def test_existing_inventories_stay_valid_and_the_lab_s_words_work() -> None:
    assert inventory.parse(copy.deepcopy(VALID)).openstack is None
    data = copy.deepcopy(VALID)
    data["controllers"][0]["keystone"] = {"url": "http://127.0.0.11:5000/v3",
                                          "target": "local://"}
    data["credentials"]["openstack"] = {"user": "admin", "password": {"file": "/x"}}
    config = cloud_config(inventory.parse(data))
    assert (config.auth_url, config.source) == ("http://127.0.0.11:5000/v3", "keystone")
    with pytest.raises(ConfigError, match="no openstack section"):
        cloud_config(inventory.parse(copy.deepcopy(VALID)))


def without(key: str) -> dict[str, Any]:
    cloud = copy.deepcopy(CLOUD)
    del cloud[key]
    return cloud


@pytest.mark.parametrize(("cloud", "message"), [
    ({**CLOUD, "auth": {**CLOUD["auth"], "auth_url": "keystone:5000"}},
     "inventory: openstack.auth.auth_url: not an http(s) URL with a host"),
    ({**CLOUD, "auth": {**CLOUD["auth"], "auth_url": "https://"}},
     "inventory: openstack.auth.auth_url: not an http(s) URL with a host"),
    ({**CLOUD, "auth": {k: v for k, v in CLOUD["auth"].items() if k != "password"}},
     "inventory: openstack.auth.password: required field is missing"),
    ({**CLOUD, "auth": {**CLOUD["auth"], "password": "hunter2"}},
     "inventory: openstack.auth.password: Input should be"),
    ({**CLOUD, "auth": {**CLOUD["auth"], "password": {"env": "A", "file": "/b"}}},
     "inventory: openstack.auth.password: give exactly one of env or file"),
    ({**CLOUD, "auth": {**CLOUD["auth"], "project_name": ""}},
     "inventory: openstack.auth.project_name: String should have at least 1"),
    ({**CLOUD, "verify": False}, "inventory: openstack: cacert: not with verify: false"),
    ({**CLOUD, "interface": "private"}, "inventory: openstack.interface: Input should be"),
    ({**CLOUD, "colour": "blue"}, "inventory: openstack.colour: unknown field"),
    (without("auth"), "inventory: openstack.auth: required field is missing"),
])
def test_a_bad_openstack_section_is_one_line_naming_the_field(cloud: Any,
                                                               message: str) -> None:
    with pytest.raises(ConfigError) as info:
        inventory.parse(site(cloud))
    text = str(info.value)
    assert "\n" not in text and text.startswith(message), text
    assert "hunter2" not in text


def test_the_workload_needs_an_image_and_a_flavor() -> None:
    with pytest.raises(ConfigError, match=r"^openstack.image: .*needs the image"):
        BootDelete(inventory.parse(site(without("image"))))
    with pytest.raises(ConfigError, match=r"^openstack.flavor: "):
        BootDelete(inventory.parse(site(without("flavor"))))
    assert BootDelete(inventory.parse(site(without("image"))), image="blank").image == "blank"


def test_the_example_inventory_is_valid() -> None:
    from pathlib import Path

    s = inventory.load(Path(__file__).parents[2] / "docs" / "examples" / "openstack-cloud.yaml")
    assert s.openstack is not None and s.openstack.auth.password.env == "OS_PASSWORD"


class FakeOracle:
    """What Workload needs of an oracle it is handed (``also=``)."""

    name = "openstack"
    kind = "availability"

    def __init__(self) -> None:
        from chaos.oracle import OpLedger

        self.ledger = OpLedger()
        self.calls: list[str] = []

    def describe(self) -> str:
        return "fake"

    def promise(self) -> str:
        return "fake"

    def start(self) -> None:
        self.calls.append("start")

    def stop(self, timeout: float = 15.0) -> None:
        self.calls.append("stop")

    def verdict(self) -> Any:
        self.calls.append("verdict")
        return judge(ops(3, 0), [], end=1.0)

    def cleanup(self) -> None:
        self.calls.append("cleanup")


def test_a_scenario_hands_the_workload_its_openstack_oracle() -> None:
    from chaos.workload import Workload

    s = inventory.parse(site())
    journal = Journal()
    fake = FakeOracle()
    workload = Workload(s, journal)
    with workload.running(also=[fake], galera=False, rabbitmq=False) as running:
        assert running.oracle("openstack") is fake
    running.assert_nothing_lost()
    assert fake.calls == ["start", "stop", "verdict", "cleanup"]
    assert journal.properties()["openstack_success_rate"] == 1.0


# ---- servers that existed before; nova's view of a compute host ----------------------

def test_a_server_that_existed_before_and_is_not_active_fails_the_verdict() -> None:
    kept = judge(ops(20, 0), reads("compute", "." * 20), end=20.0, existing=3)
    assert kept.ok and "3/3 servers that existed before still ACTIVE" in kept.summary()
    broken = judge(ops(20, 0), reads("compute", "." * 20), end=20.0, existing=3,
                   not_intact=["web-1: gone", "db-2: ERROR"])
    assert not broken.ok
    assert "1/3 servers that existed before" in broken.summary()
    assert "web-1: gone" in broken.summary()
    assert broken.fields()["not_intact"] == ["web-1: gone", "db-2: ERROR"]


def nova_verdict(**changes: Any) -> NovaHostVerdict:
    fields: dict[str, Any] = {"host": "cmp1", "within": 120.0, "up_after": 14.2,
                              "service": "up, enabled", "kept": ["witness"], "lost": [],
                              "new_boot": "ACTIVE in 3.1s", "booted": True}
    return NovaHostVerdict(**{**fields, **changes})


def test_nova_host_passes_when_up_kept_and_booting() -> None:
    v = nova_verdict()
    assert v.ok and "up and enabled 14.2s" in v.summary()


@pytest.mark.parametrize(("broken", "said"), [
    ({"up_after": None, "service": "up, disabled (Connection to libvirt lost: 1)",
      "booted": False, "new_boot": "not tried: nova-compute is not up"},
     "NOT up and enabled within 120s (up, disabled (Connection to libvirt lost: 1))"),
    ({"kept": [], "lost": ["witness: SHUTOFF"]}, "not ACTIVE now: witness: SHUTOFF"),
    ({"booted": False, "new_boot": "ERROR after 12s"}, "a new server there: ERROR after 12s"),
])
def test_nova_host_fails_on_each_broken_case(broken: dict[str, Any], said: str) -> None:
    v = nova_verdict(**broken)
    assert not v.ok and said in v.summary()


def test_nova_host_verdict_reaches_the_junit_properties_and_the_report() -> None:
    from chaos.report import oracle_words

    journal = Journal()
    v = nova_verdict(lost=["witness: gone"], kept=[])
    journal.event(Event.ORACLE_NOVA_HOST, **v.fields())
    props = journal.properties()
    assert props["nova_compute_up_seconds"] == 14.2
    assert props["nova_servers_not_active"] == 1 and props["nova_new_server_booted"] is True
    text = oracle_words(journal.events[-1])
    assert "nova on cmp1" in text and "not ACTIVE: witness: gone" in text


def test_where_no_cloud_is_named_nova_is_not_asked() -> None:
    s = inventory.parse(copy.deepcopy(VALID))
    assert NovaHost.where_running(s, "cmp1") is None
    assert boot_delete_where_named(s) == []
    named = inventory.parse(site())
    assert [type(w) for w in boot_delete_where_named(named)] == [BootDelete]
    no_image = inventory.parse(site({**CLOUD, "image": None}))
    assert boot_delete_where_named(no_image) == []


def test_a_server_gone_to_error_is_the_first_error_when_every_request_answered() -> None:
    failed = [Operation("bd-7", False, 30.0, "id-7", "active", "status ERROR")]
    v = judge(ops(27, 0) + failed, reads("compute", "." * 30), end=30.0)
    assert v.first_error == "bd-7 at active: status ERROR"
    assert v.ok  # 27/28 = 96 %: above the default 95 %


def test_a_drill_reports_the_success_rate_and_judges_the_window() -> None:
    drill = boot_delete_where_named(inventory.parse(site()))[0]
    assert drill.min_success == 0.0 and drill.max_window is None
    half = judge(ops(2, 2), reads("compute", "..xxxxx..."), end=10.0,
                 min_success=drill.min_success)
    assert half.ok and half.success_rate == 0.5
    long = judge(ops(2, 2), reads("compute", "." + "x" * 40 + "."), end=42.0,
                 min_success=drill.min_success)
    assert not long.ok and long.error_window == 40.0
