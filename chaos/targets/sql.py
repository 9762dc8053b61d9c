"""``galera://HOST``: an SQL session on a site's Galera node, with the site's account.

SQL is a Step like any other, so a plan shows ``[galera://ctl3] SET GLOBAL …`` and the
password stays in the inventory's secret reference, never in a command line or log.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pymysql

from chaos.targets.base import CommandResult, Target, TargetUnreachable


def parse_node(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "galera" or not parts.hostname:
        raise ValueError(f"{url}: not galera://HOST")
    return parts.hostname


class SqlTarget(Target):
    scheme = "galera"

    def __init__(self, url: str, *, address: Callable[[], tuple[str, int]], user: str,
                 password: str) -> None:
        super().__init__(url)
        self.node = parse_node(url)
        # the node's client port, found when a command runs (a port-forward is opened
        # then, never while a plan is only printed)
        self.address, self.user, self._password = address, user, password

    def _run(self, command: str, timeout: float) -> CommandResult:
        host, port = self.address()
        try:
            conn = pymysql.connect(host=host, port=port, user=self.user,
                                   password=self._password, connect_timeout=min(timeout, 5.0),
                                   read_timeout=timeout, write_timeout=timeout, autocommit=True)
        except pymysql.MySQLError as exc:
            raise TargetUnreachable(f"{self.url}: {exc}") from None
        try:
            with conn.cursor() as cur:
                cur.execute(command)
                rows = cur.fetchall() if cur.description else ()
            out = "\n".join("\t".join(str(v) for v in row) for row in rows)
            return CommandResult(self.url, command, 0, out, "")
        except pymysql.MySQLError as exc:
            return CommandResult(self.url, command, 1, "", str(exc))
        finally:
            conn.close()
