"""The one HTTP client of the tests for an API under test, whoever runs it: a uvicorn process
(tests/service_processes.py ``Api``) or a stack's container (tests/compose_stack.py ``Stack``,
tests/swarm_cluster.py ``SwarmStack``). It sends the bearer token the task routes require and
polls /readyz and task results the same way for all of them."""

from __future__ import annotations

from typing import Any

import httpx

from tests.polling import wait_for


class ApiEndpoint:
    """Mixed into what runs an API, which gives its ``url`` and ``token`` (None: none sent)."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def token(self) -> str | None:
        return None

    # A process stays up while its tests poll it: one kept-alive connection, which spares the
    # CPU. A container may be recreated under a test, and a connection kept across that would
    # fail the next request: stacks open one per request (keep_alive False).
    keep_alive: bool = True
    _http: httpx.Client | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def client(self) -> httpx.Client:
        if self._http is None:
            limits = httpx.Limits(max_keepalive_connections=None if self.keep_alive else 0)
            self._http = httpx.Client(base_url=self.url, timeout=30, headers=self.auth,
                                      limits=limits)
        return self._http

    def close_client(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def context(self) -> str:
        """What a timed-out wait shows besides what it awaited (a stack: its logs)."""
        return ""

    def get(self, path: str) -> Any:
        return self.client.get(path).json()

    def readyz(self, timeout: float = 5) -> dict[str, Any] | None:
        """/readyz's body when it says ready, else None (also when nothing answers)."""
        try:
            response = self.client.get("/readyz", timeout=timeout)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body if body.get("ready") else None

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """/readyz's body once it says ready."""
        found: dict[str, Any] = wait_for(self.readyz, timeout,
                                         lambda: f"{self.url}/readyz\n{self.context()}",
                                         interval=0.1)
        return found

    def enqueue(self, task: str, expect: int = 202, **body: Any) -> dict[str, Any]:
        """POST /tasks/{task} with ``body`` as JSON; the answer must be ``expect``."""
        response = self.client.post(f"/tasks/{task}", json=body)
        assert response.status_code == expect, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def result(self, task_id: str, timeout: float = 30,
               path: str = "/tasks/{}") -> dict[str, Any]:
        """The task's body once it succeeded or failed (``path``: the app's result route);
        a refused connection or an error status on the way is polled again."""
        last: dict[str, Any] = {}

        def done() -> dict[str, Any] | None:
            try:
                response = self.client.get(path.format(task_id), timeout=10)
            except httpx.HTTPError:
                return None
            if response.status_code != 200:
                return None
            last.clear()
            last.update(response.json())
            return last if last.get("state") in ("SUCCESS", "FAILURE") else None

        found: dict[str, Any] = wait_for(
            done, timeout, lambda: f"task {task_id} to finish (last: {last})\n{self.context()}",
            interval=0.05)
        return found
