"""Errors typed by what the caller should do about them.

``SyncError`` is the root. Below it:

- ``FatalError``: stop working on this connection (bad credentials, bad configuration);
  retrying will not help until a person acts.
- ``RetriableError``: a transient fault (429, 5xx, timeout, connection reset); the HTTP
  layer retries these, and a run that still fails with one is retried on the next schedule.
- ``RejectedRow``: the provider (or our own validation) refused one row; it becomes a
  reject with a readable reason and never stops the batch.

Messages default to the class docstring, so ``raise AuthenticationError()`` still says something.
"""

from __future__ import annotations


class SyncError(Exception):
    """The sync daemon failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0])


# --- configuration (whose fault: the operator) ---------------------------------------------


class ConfigurationError(SyncError):
    """A setting is missing or invalid."""


class MasterKeyError(ConfigurationError):
    """The master key is missing or does not decrypt the stored credentials."""


class CredentialsError(ConfigurationError):
    """The credentials given for a connection are incomplete or malformed."""


class InvalidInputError(SyncError):
    """The input is invalid."""


class NotFoundError(SyncError):
    """The tenant or connection does not exist."""


class AlreadyExistsError(SyncError):
    """The tenant or connection already exists."""


class LeaseHeldError(SyncError):
    """Another worker holds this connection's lease."""

    def __init__(self, message: str | None = None, *, holder: str | None = None,
                 expires_at: object | None = None) -> None:
        super().__init__(message)
        self.holder = holder
        self.expires_at = expires_at


class LeaseLostError(LeaseHeldError):
    """This run lost its connection's lease (taken over, or not renewable): it stops before its
    next provider write."""


# --- provider errors (whose fault: the provider or the network) ----------------------------


class ProviderError(SyncError):
    """The provider answered with an error."""

    def __init__(self, message: str | None = None, *, status_code: int | None = None,
                 provider_code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.provider_code = provider_code


class FatalError(ProviderError):
    """The provider refused the request in a way retrying cannot fix."""


class AuthenticationError(FatalError):
    """The provider rejected the credentials."""


class UnknownReadingError(FatalError):
    """The provider answered in none of the readings of its document we accept.

    Fatal, not retriable: the same server answers the same way next time. The message names the
    endpoint, the readings expected and the first characters that came (secrets scrubbed), in one line."""


class RetriableError(ProviderError):
    """A transient fault: try again later."""

    def __init__(self, message: str | None = None, *, status_code: int | None = None,
                 provider_code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status_code=status_code, provider_code=provider_code)
        self.retry_after = retry_after


class AnswerLostError(RetriableError):
    """A request that is not safe to repeat was sent but its answer was lost (dropped connection,
    timeout, 5xx after sending): it may have been applied. The caller looks before it sends again."""


class MalformedAnswerError(RetriableError):
    """The provider answered with something we cannot read (an HTML page, an empty body, truncated
    JSON, an error envelope with 200, a missing field)."""


class RejectedRow(ProviderError):
    """The provider refused this one row."""

    def __init__(self, reason: str, *, status_code: int | None = None,
                 provider_code: str | None = None) -> None:
        super().__init__(reason, status_code=status_code, provider_code=provider_code)
        self.reason = reason


# --- stopping (whose fault: nobody's; someone asked) -----------------------------------------


class StopRequested(SyncError):
    """Stopped at a safe point: SIGTERM or Ctrl-C asked the run to stop."""
