"""events.k8s.io/v1 Events, the calls the Events sink makes (its `EventWriter`)."""

from __future__ import annotations

from typing import Any

from agent.kube.client import Api, quote_segment


class EventClient:
    """Creates, reads and merge-patches namespaced Events; failures raise `KubeError`."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def create_event(
        self, namespace: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """POST the Event as given; 409 (AlreadyExists) comes back as `KubeError`."""
        # Not the typed create: it re-serialises eventTime without the six fractional
        # digits a MicroTime needs (`...T00:00:00+00:00`), which the API server rejects.
        return self.api.create_object(_events_path(namespace), body, timeout=timeout)

    def get_event(
        self, namespace: str, name: str, *, timeout: float | None = None
    ) -> dict[str, Any] | None:
        """The Event, or None when it does not exist."""
        return self.api.get_object(_event_path(namespace, name), timeout=timeout)

    def patch_event(
        self, namespace: str, name: str, patch: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """JSON merge patch (RFC 7386) of the Event."""
        return self.api.patch_object(_event_path(namespace, name), patch, timeout=timeout)


def _events_path(namespace: str) -> str:
    return f"/apis/events.k8s.io/v1/namespaces/{quote_segment(namespace)}/events"


def _event_path(namespace: str, name: str) -> str:
    return f"{_events_path(namespace)}/{quote_segment(name)}"
