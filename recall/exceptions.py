"""Errors raised by the recall stage, one class per boundary it guards."""

from mindstream.errors import MindstreamError


class RecallError(MindstreamError):
    """Base of the recall stage's errors."""


class ItemIndexError(RecallError):
    """An item index could not be built, saved or loaded."""


class IndexMismatchError(ItemIndexError):
    """An index (or its cache file) belongs to another bundle version or other parameters."""


class ModelVersionUnavailable(RecallError):
    """A user's vectors come from a bundle version whose index this process does not hold."""

    def __init__(self, record_version: str, loaded: list[str]) -> None:
        self.record_version = record_version
        self.loaded = loaded
        super().__init__(
            f"the user's interest vectors were made by bundle {record_version}, and this "
            f"service holds indexes for {loaded or 'no bundle'}; vectors are only compared with "
            "an index of the same bundle version (the record is refreshed on the user's next "
            "event, or point the bundle link back at that version)"
        )


class DiversityUnavailable(RecallError):
    """A diversity-aware merge was asked of a model whose bundle carries no item categories."""

    def __init__(self, version: str) -> None:
        self.version = version
        super().__init__(
            f"bundle {version} carries no item categories, so its candidates can only be merged "
            "by score (diversity 0): export the model from data with a category or other item "
            "feature to serve a diversity above 0"
        )


class StoreUnavailable(RecallError):
    """Redis did not answer (down, unreachable or too slow)."""


class UserNotFound(RecallError):
    """No interest record exists for the user."""


class InvalidRequest(RecallError):
    """A request parameter or body field has a value the service cannot use."""

    def __init__(self, parameter: str, detail: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {detail}")
