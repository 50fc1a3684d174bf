"""The stored report page (`reports/index.html`), beside the reports it is made from."""

from __future__ import annotations

from shared.storage.container import HTML, Container

REPORT_PAGE = "reports/index.html"


class PageStore:
    """Writes and reads the report page."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def version(self) -> str | None:
        """The stored page's ETag, or None if none has been written yet: what `write_if_unchanged` takes."""
        return self._container.etag_optional(REPORT_PAGE, "report page")

    def write_if_unchanged(self, html: str, version: str | None) -> bool:
        """Store the page only if the stored one is still `version` (None: there is none yet).

        False when another writer stored one since: this render may be older than theirs.
        """
        if version is None:
            return self._container.create(REPORT_PAGE, html, "report page", HTML)
        return self._container.replace_if_unchanged(REPORT_PAGE, html, version, "report page", HTML)

    def read(self) -> str | None:
        """The stored report page, or None if none has been written yet."""
        return self._container.read_optional(REPORT_PAGE, "report page")
