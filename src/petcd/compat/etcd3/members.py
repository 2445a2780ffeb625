"""python-etcd3's `etcd3.members.Member`."""

from __future__ import annotations

from typing import Any


class Member:
    def __init__(self, id: int, name: str, peer_urls: Any, client_urls: Any,
                 etcd_client: Any = None) -> None:
        self.id = id
        self.name = name
        self.peer_urls = peer_urls
        self.client_urls = client_urls
        self._etcd_client = etcd_client

    def __str__(self) -> str:
        return (f"Member {self.id}: peer urls: {self.peer_urls}, "
                f"client urls: {self.client_urls}")

    def remove(self) -> None:
        self._etcd_client.remove_member(self.id)

    def update(self, peer_urls: Any) -> None:
        self._etcd_client.update_member(self.id, peer_urls)

    @property
    def active_alarms(self) -> Any:
        return self._etcd_client.list_alarms(member_id=self.id)
