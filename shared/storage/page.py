"""The stored report page (`reports/index.html`), beside the reports it is made from."""

from __future__ import annotations

from shared.storage.container import HTML, Container

REPORT_PAGE = "reports/index.html"


class PageStore:
    """Writes and reads the report page."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def write(self, html: str) -> str:
        """Store (or replace) the report page; returns its blob name."""
        self._container.upload(REPORT_PAGE, html, HTML, "report page")
        return REPORT_PAGE

    def read(self) -> str | None:
        """The stored report page, or None if none has been written yet."""
        return self._container.read_optional(REPORT_PAGE, "report page")
