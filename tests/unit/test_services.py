"""The services' client code, against libvirt's own in-process test driver
(``test:///default``: a real libvirt connection, no daemon) and Galera's status rows."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chaos.errors import LabError, ServiceError
from chaos.services.galera import state_from_rows
from chaos.services.libvirt import STATE_NAMES, with_libvirt

URI = "test:///default"


def test_with_libvirt_returns_what_the_work_found() -> None:
    found = with_libvirt(URI, lambda conn: [(d.name(), d.state()[0])
                                            for d in conn.listAllDomains(0)],
                         timeout=5, what="list domains")
    assert [(name, STATE_NAMES[state]) for name, state in found] == [("test", "running")]


def test_a_libvirt_error_is_a_service_error_naming_what_was_asked() -> None:
    with pytest.raises(ServiceError, match="look up nothing-here") as caught:
        with_libvirt(URI, lambda conn: conn.lookupByName("nothing-here"), timeout=5,
                     what="look up nothing-here")
    assert not isinstance(caught.value, LabError)


def test_a_libvirtd_that_does_not_answer_is_a_service_error_not_a_lab_error() -> None:
    release = threading.Event()
    uri = "test:///default?stuck"  # its own URI: the stuck call is remembered per URI

    def hang(conn: Any) -> None:
        release.wait(10)

    try:
        with pytest.raises(ServiceError, match=r"did not answer within 0\.2s \(hang\)") as first:
            with_libvirt(uri, hang, timeout=0.2, what="hang")
        assert not isinstance(first.value, LabError)
        # while that call is stuck, no second thread is left behind on the same URI
        with pytest.raises(ServiceError, match="an earlier call is still blocked"):
            with_libvirt(uri, hang, timeout=0.2, what="hang again")
    finally:
        release.set()


def test_galera_state_from_status_rows() -> None:
    state = state_from_rows({"wsrep_cluster_size": "3", "wsrep_cluster_status": "Primary",
                             "wsrep_local_state_comment": "Synced", "wsrep_ready": "ON",
                             "wsrep_last_committed": "42", "wsrep_cluster_state_uuid": "u"})
    assert state.healthy and state.size == 3 and state.last_committed == 42
    lost = state_from_rows({"wsrep_cluster_status": "non-Primary", "wsrep_ready": "OFF"})
    assert not lost.healthy and lost.size == -1
    assert lost.describe() == "size=-1 non-Primary unknown seqno=-1 not-ready"
