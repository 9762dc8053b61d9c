"""The decisions of the openstack-helm-shaped MariaDB start script, as pure functions:
who bootstraps after a full outage, whether the published data is fresh, which plan a
starting pod follows, the leader lease, the cluster config, grastate.dat edits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chaoslab.pods.osh_mariadb_start import (
    ANN_STATE,
    Lease,
    Plan,
    cluster_config,
    cluster_data_is_fresh,
    format_time,
    fresh_checks_needed,
    grastate_sample,
    i_lead_reboot,
    initial_state,
    leader_lease_action,
    next_fresh_count,
    nodes_with_highest_seqno,
    parse_grastate,
    parse_time,
    plan_start,
    readiness_verdict,
    reboot_leader,
    recovered_seqno,
    resolve_leader_node,
    set_grastate_text,
    stale_nodes,
)

NOW = datetime(2026, 12, 2, 8, 0, 0, tzinfo=UTC)
P = "mariadb-server"


def sample(seqnos: dict[int, str], *, age: dict[int, float] | None = None,
           safe: dict[int, str] | None = None) -> dict[str, str]:
    """A state ConfigMap's data as three pods publish it."""
    data: dict[str, str] = {}
    for number, seqno in seqnos.items():
        pod = f"{P}-{number}"
        data[f"version.{pod}"] = "2.1"
        data[f"uuid.{pod}"] = "6b0c2a8e-0000-11ee-8000-000000000001"
        data[f"seqno.{pod}"] = seqno
        data[f"safe_to_bootstrap.{pod}"] = (safe or {}).get(number, "0")
        seconds = (age or {}).get(number, 1.0)
        data[f"sample_time.{pod}"] = format_time(NOW - timedelta(seconds=seconds))
    return data


# ---- who bootstraps ----------------------------------------------------------------
def test_the_highest_seqno_wins_whatever_its_ordinal() -> None:
    data = sample({0: "10", 1: "42", 2: "41"})
    assert nodes_with_highest_seqno(data) == [f"{P}-1"]
    assert reboot_leader(data) == f"{P}-1"


def test_lowest_ordinal_among_equal_highest() -> None:
    data = sample({0: "7", 1: "42", 2: "42"})
    assert nodes_with_highest_seqno(data) == [f"{P}-1", f"{P}-2"]
    assert reboot_leader(data) == f"{P}-1"
    assert reboot_leader(sample({0: "42", 1: "42", 2: "42"})) == f"{P}-0"


def test_seqnos_compare_as_numbers_not_text() -> None:
    # "9" > "10" as text; the chart casts to int
    assert reboot_leader(sample({0: "9", 1: "10"})) == f"{P}-1"


def test_ordinals_compare_as_numbers() -> None:
    assert resolve_leader_node([f"{P}-10", f"{P}-2"]) == f"{P}-2"


def test_minus_one_loses_to_any_recovered_position() -> None:
    # a pod whose --wsrep-recover found nothing still publishes -1: it never wins
    # against a recovered position, even with the lowest ordinal
    data = sample({0: "-1", 1: "5", 2: "-1"})
    assert reboot_leader(data) == f"{P}-1"


def test_all_minus_one_still_elects_the_lowest_ordinal() -> None:
    # the chart makes no exception for -1: if every pod says -1, pod 0 bootstraps
    assert reboot_leader(sample({0: "-1", 1: "-1", 2: "-1"})) == f"{P}-0"


def test_safe_to_bootstrap_plays_no_part_in_the_choice() -> None:
    # published by every pod, read by none: the most advanced pod bootstraps even
    # when another one says safe_to_bootstrap: 1
    data = sample({0: "30", 1: "31", 2: "30"}, safe={0: "1"})
    assert reboot_leader(data) == f"{P}-1"


def test_a_seqno_that_is_not_a_number_blocks_the_decision() -> None:
    # grastate.dat without a seqno line is published as "None"; the chart's int()
    # raises there, so no pod can be chosen
    data = sample({0: "12", 1: "None", 2: "12"})
    assert nodes_with_highest_seqno(data) is None
    assert reboot_leader(data) is None


def test_no_published_seqno_no_decision() -> None:
    assert reboot_leader({}) is None


# ---- is the data fresh -------------------------------------------------------------
WINDOW = 20.0  # two update periods of 10 s, as the chart


def test_fresh_when_every_sample_is_recent() -> None:
    data = sample({0: "1", 1: "2", 2: "3"}, age={0: 1, 1: 9, 2: 19.9})
    assert stale_nodes(data, NOW, WINDOW) == []
    assert cluster_data_is_fresh(data, NOW, WINDOW)


def test_one_stale_sample_blocks_everyone() -> None:
    # the pod that is not running keeps its old keys: its sample ages and the others
    # can never see fresh data
    data = sample({0: "1", 1: "2", 2: "3"}, age={2: 300})
    assert stale_nodes(data, NOW, WINDOW) == [f"{P}-2"]
    assert not cluster_data_is_fresh(data, NOW, WINDOW)


def test_an_unreadable_sample_time_is_stale() -> None:
    data = sample({0: "1", 1: "2"})
    data[f"sample_time.{P}-1"] = "yesterday"
    assert stale_nodes(data, NOW, WINDOW) == [f"{P}-1"]


def test_a_pod_that_never_published_does_not_block() -> None:
    # the chart judges only the pods found in the ConfigMap: a pod with no keys at all
    # (a ConfigMap recreated, a replica added) is not waited for -- unlike the issue's
    # "every seqno is known"
    data = sample({0: "4", 1: "9"})
    assert cluster_data_is_fresh(data, NOW, WINDOW)
    assert reboot_leader(data) == f"{P}-1"


def test_a_stale_pod_waits_for_ever() -> None:
    """The streak of fresh looks never reaches the count while one sample is stale:
    ten minutes of looks, 10 s apart, and no decision."""
    data = sample({0: "5", 1: "5", 2: "9"}, age={2: 30})
    needed = fresh_checks_needed(120, 10)
    counter = 0
    for step in range(60):
        now = NOW + timedelta(seconds=10 * step)
        fresh_0_1 = {k: (format_time(now) if k.startswith("sample_time") and
                         not k.endswith("-2") else v) for k, v in data.items()}
        counter = next_fresh_count(counter, cluster_data_is_fresh(fresh_0_1, now, WINDOW))
        assert counter <= needed
    assert counter == 0


def test_fresh_streak_counts_and_resets() -> None:
    assert fresh_checks_needed(120, 10) == 12  # the loop runs while counter <= 12
    counter = 0
    for _ in range(13):
        counter = next_fresh_count(counter, True)
    assert counter == 13
    assert next_fresh_count(counter, False) == 0


# ---- which plan a starting pod follows -----------------------------------------------
ME = f"{P}-1"


@pytest.mark.parametrize(("state", "leader", "reboot", "replicas", "active", "plan"), [
    ("new", ME, "", 3, False, Plan.BOOTSTRAP_NEW),
    ("new", f"{P}-0", "", 3, False, Plan.WAIT_LIVE_THEN_JOIN),
    ("init", ME, "", 3, False, Plan.WAIT_LIVE_THEN_JOIN),
    ("live", f"{P}-0", "", 3, True, Plan.JOIN),
    ("live", f"{P}-0", "", 3, False, Plan.ELECT_AFTER_OUTAGE),
    ("live", ME, "", 1, False, Plan.SINGLE_NODE_REBOOT),
    ("reboot", f"{P}-0", ME, 3, False, Plan.RETRY_REBOOT),
    ("reboot", ME, f"{P}-0", 3, False, Plan.WAIT_REBOOT_THEN_JOIN),
    ("bogus", ME, "", 3, False, Plan.UNKNOWN_STATE),
])  # fmt: skip
def test_plan_start(state: str, leader: str, reboot: str, replicas: int, active: bool,
                    plan: Plan) -> None:
    assert plan_start(state, me=ME, leader_node=leader, reboot_node=reboot,
                      replicas=replicas, active=active) is plan


def test_initial_state() -> None:
    assert initial_state(active=False, me=f"{P}-2") == ("new", f"{P}-2")
    # a cluster found running unmanaged is adopted, led by ordinal 0
    assert initial_state(active=True, me=f"{P}-2") == ("live", f"{P}-0")


def test_only_the_chosen_pod_sets_reboot_and_only_while_nothing_runs() -> None:
    assert i_lead_reboot(me=ME, leader=ME, active=False, state="live")
    assert not i_lead_reboot(me=ME, leader=f"{P}-0", active=False, state="live")
    assert not i_lead_reboot(me=ME, leader=ME, active=True, state="live")
    assert not i_lead_reboot(me=ME, leader=ME, active=False, state="reboot")


# ---- the leader lease ----------------------------------------------------------------
def test_lease() -> None:
    later = format_time(NOW + timedelta(seconds=60))
    earlier = format_time(NOW - timedelta(seconds=1))
    assert leader_lease_action(me=ME, leader_node=ME, expiry=later, now=NOW) is Lease.RENEW
    assert leader_lease_action(me=ME, leader_node="x-0", expiry=later, now=NOW) is Lease.KEEP
    assert leader_lease_action(me=ME, leader_node="x-0", expiry=earlier,
                               now=NOW) is Lease.TAKE
    assert leader_lease_action(me=ME, leader_node=None, expiry=None, now=NOW) is Lease.TAKE


def test_times_round_trip_in_the_charts_format() -> None:
    text = format_time(NOW)
    assert text == "2026-12-02T08:00:00Z"
    assert parse_time(text) == NOW
    assert parse_time("2026-12-02T08:00:00.123456Z") == NOW + timedelta(microseconds=123456)
    assert parse_time("") is None


# ---- config, grastate, recovery, readiness -----------------------------------------
DOMAIN = "mariadb-discovery.openstack.svc.cluster.local"


def test_cluster_config_names_the_peers_by_discovery_name() -> None:
    run = cluster_config(me=ME, prefix=P, replicas=3, domain=DOMAIN, port="4567", mode="run")
    assert run == {
        "wsrep_node_address": f"{P}-1.{DOMAIN}:4567",
        "wsrep_node_name": f"{P}-1.{DOMAIN}",
        "wsrep_cluster_address": f"gcomm://{P}-0.{DOMAIN}:4567,{P}-2.{DOMAIN}:4567",
    }
    boot = cluster_config(me=ME, prefix=P, replicas=3, domain=DOMAIN, port="4567",
                          mode="bootstrap")
    assert boot["wsrep_cluster_address"] == "gcomm://"
    alone = cluster_config(me=f"{P}-0", prefix=P, replicas=1, domain=DOMAIN, port="4567",
                           mode="run")
    assert alone["wsrep_cluster_address"] == "gcomm://"


GRASTATE = """# GALERA saved state
version: 2.1
uuid:    6b0c2a8e-0000-11ee-8000-000000000001
seqno:   -1
safe_to_bootstrap: 0
"""


def test_grastate_parse_and_edit() -> None:
    values = parse_grastate(GRASTATE)
    assert values == {"version": "2.1", "uuid": "6b0c2a8e-0000-11ee-8000-000000000001",
                      "seqno": "-1", "safe_to_bootstrap": "0"}
    edited = set_grastate_text(set_grastate_text(GRASTATE, "seqno", "57"),
                               "safe_to_bootstrap", "1")
    assert parse_grastate(edited)["seqno"] == "57"
    assert parse_grastate(edited)["safe_to_bootstrap"] == "1"
    assert edited.startswith("# GALERA saved state\n")


def test_grastate_sample_publishes_none_for_a_missing_key() -> None:
    published = grastate_sample({"seqno": "3"}, ME, NOW)
    assert published[f"seqno.{ME}"] == "3"
    assert published[f"uuid.{ME}"] == "None"
    assert published[f"sample_time.{ME}"] == "2026-12-02T08:00:00Z"


def test_recovered_seqno() -> None:
    stderr = ("2026-12-02  8:00:00 0 [Note] InnoDB: Starting final batch\n"
              "2026-12-02  8:00:01 0 [Note] WSREP: Recovered position: "
              "6b0c2a8e-0000-11ee-8000-000000000001:1234\n")
    assert recovered_seqno(stderr) == "1234"
    assert recovered_seqno("nothing here\n") is None


def test_readiness_needs_ready_connected_primary_synced() -> None:
    good = {"wsrep_ready": "ON", "wsrep_connected": "ON",
            "wsrep_cluster_status": "Primary", "wsrep_local_state_comment": "Synced"}
    assert readiness_verdict(good, 3)[0]
    for name, bad in (("wsrep_ready", "OFF"), ("wsrep_cluster_status", "non-Primary"),
                      ("wsrep_local_state_comment", "Donor/Desynced"),
                      ("wsrep_connected", "OFF")):
        ok, why = readiness_verdict({**good, name: bad}, 3)
        assert not ok
        assert name in why
    assert not readiness_verdict({}, 3)[0]
    # a single replica: answering is enough (readiness.sh checks wsrep only above 1)
    assert readiness_verdict({}, 1)[0]


def test_state_annotation_name() -> None:
    assert ANN_STATE == "openstackhelm.openstack.org/cluster.state"
