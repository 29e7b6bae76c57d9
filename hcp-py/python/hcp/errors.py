"""HCP's exceptions: one class per error kind, all subclasses of :class:`HcpError`.

Every error HCP reports carries a stable ``code`` (``"NOT_FOUND"``, ``"IDEMPOTENCY_KEY_REUSED"``,
...), its ``kind`` (``"not_found"``), the request ``field`` it is about when there is one, and the
``job_id`` when a job is involved. Catch the kind you can act on::

    try:
        engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", zone="zone-b", user_data="...")
    except hcp.FeatureNotSupported as e:
        print(e.code, e.context)       # FEATURE_NOT_SUPPORTED {'provider': 'sim', 'capability': 'cloud_init'}
    except hcp.InvalidSpec as e:
        print(f"fix {e.field}: {e}")

Classes also derive from the closest built-in exception where one fits (``InvalidSpec`` is a
``ValueError``, ``NotFound`` a ``LookupError``, ``Timeout`` a ``TimeoutError``, ...), so generic
``except ValueError`` handlers keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    from ._hcp import Job

__all__ = [
    "HcpError",
    "NotFound",
    "Conflict",
    "FeatureNotSupported",
    "InvalidSpec",
    "QuotaExceeded",
    "ProviderUnavailable",
    "ProviderError",
    "Timeout",
    "Cancelled",
    "Unauthorized",
    "Internal",
    "JobFailed",
]


class HcpError(Exception):
    """The base class of every error HCP raises.

    Parameters
    ----------
    message : str
        What went wrong, in one line.
    kind : str, optional
        The error kind (``"not_found"``, ``"invalid_spec"``, ...); the class's own kind by default.
    code : str, optional
        The stable code; the kind's code by default.
    field : str, optional
        The request field the error is about.
    job_id : str, optional
        The job involved, if any.
    operation : str, optional
        The operation that failed (``"create_vm"``, ...).
    context : mapping, optional
        Extra context (provider, capability, ...).
    temporary : bool, optional
        ``True`` when retrying the same call later may succeed.
    detail : str, optional
        The full one-line report: kind, retry status, operation, context and message.

    Attributes
    ----------
    kind, code, field, job_id, operation, context, temporary, detail
        As above; ``str(error)`` is the message.
    """

    #: The kind of errors of this class.
    default_kind: str = "internal"
    #: The code of errors of this class, unless a more precise one is given.
    default_code: str = "INTERNAL"

    kind: str
    code: str
    field: Optional[str]
    job_id: Optional[str]
    operation: Optional[str]
    context: dict[str, str]
    temporary: bool
    detail: str

    def __init__(
        self,
        message: str,
        *,
        kind: Optional[str] = None,
        code: Optional[str] = None,
        field: Optional[str] = None,
        job_id: Optional[str] = None,
        operation: Optional[str] = None,
        context: Optional[Mapping[str, str]] = None,
        temporary: bool = False,
        detail: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind if kind is not None else self.default_kind
        self.code = code if code is not None else self.default_code
        self.field = field
        self.job_id = job_id
        self.operation = operation
        self.context = dict(context or {})
        self.temporary = temporary
        self.detail = detail if detail is not None else message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        parts = [repr(self.message), f"code={self.code!r}"]
        if self.field is not None:
            parts.append(f"field={self.field!r}")
        if self.job_id is not None:
            parts.append(f"job_id={self.job_id!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.message, self._state()))

    def _state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "code": self.code,
            "field": self.field,
            "job_id": self.job_id,
            "operation": self.operation,
            "context": self.context,
            "temporary": self.temporary,
            "detail": self.detail,
        }


def _rebuild(cls: type[HcpError], message: str, state: dict[str, Any]) -> HcpError:
    return cls(message, **state)


class NotFound(HcpError, LookupError):
    """The VM, job, image or other object does not exist, or belongs to another project."""

    default_kind = "not_found"
    default_code = "NOT_FOUND"


class Conflict(HcpError):
    """The request conflicts with the current state.

    A name already taken, a request the VM's state rules out (``code == "VM_STATE_CONFLICT"``,
    such as a reboot of a stopped VM), or an idempotency key reused
    with a different request (``code == "IDEMPOTENCY_KEY_REUSED"``) or still being accepted
    (``code == "IDEMPOTENCY_KEY_IN_PROGRESS"``).
    """

    default_kind = "conflict"
    default_code = "CONFLICT"


class FeatureNotSupported(HcpError):
    """The provider, zone or host lacks a capability the request needs.

    ``context`` names the provider and the missing capability; nothing was created.
    """

    default_kind = "feature_not_supported"
    default_code = "FEATURE_NOT_SUPPORTED"


class InvalidSpec(HcpError, ValueError):
    """The request is invalid; ``field`` names the offending field and the message says what is allowed."""

    default_kind = "invalid_spec"
    default_code = "INVALID_SPEC"


class QuotaExceeded(HcpError):
    """A project quota or the hosts' capacity refuses the request."""

    default_kind = "quota_exceeded"
    default_code = "QUOTA_EXCEEDED"


class ProviderUnavailable(HcpError, ConnectionError):
    """The provider, host or HCP service cannot be reached or refuses the connection."""

    default_kind = "provider_unavailable"
    default_code = "PROVIDER_UNAVAILABLE"


class ProviderError(HcpError):
    """The provider answered with an error HCP could not classify more precisely."""

    default_kind = "provider_error"
    default_code = "PROVIDER_ERROR"


class Timeout(HcpError, TimeoutError):
    """An operation or a wait did not finish in time.

    After a ``wait_job(..., timeout=...)`` or ``wait=True, timeout=...`` the job goes on;
    ``job_id`` names it.
    """

    default_kind = "timeout"
    default_code = "TIMEOUT"


class Cancelled(HcpError):
    """The operation was cancelled."""

    default_kind = "cancelled"
    default_code = "CANCELLED"


class Unauthorized(HcpError, PermissionError):
    """The caller is not authenticated or not allowed to act."""

    default_kind = "unauthorized"
    default_code = "UNAUTHORIZED"


class Internal(HcpError):
    """A bug or broken invariant inside HCP."""

    default_kind = "internal"
    default_code = "INTERNAL"


class JobFailed(HcpError):
    """A job that a call waited for ended ``FAILED`` or ``CANCELLED``.

    ``job_id`` names the job, ``code`` and ``kind`` are those of the job's own error (for example
    ``"QUOTA_EXCEEDED"``), and ``job`` is the job in its final state.
    """

    default_kind = "internal"
    default_code = "JOB_FAILED"

    job: Optional["Job"]

    def __init__(self, message: str, *, job: Optional["Job"] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.job = job

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["job"] = None  # native objects do not pickle; the job id stays
        return state
