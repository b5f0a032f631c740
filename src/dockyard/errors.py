"""The one error hierarchy of dockyard.

Every layer raises one of these for a failure a user can act on; the CLI maps the
category to an exit code in one place (``exit_code``) and the API server will map it to
an HTTP status in one place. Anything else that escapes is a bug and is shown with its
traceback.

    DockyardError
    ├── InvalidArgument     bad input: a malformed config, flag or reference
    ├── NotFound            the named container, image, file... does not exist
    ├── Conflict            the thing exists already or is in the wrong state
    ├── PermissionDenied    the kernel or a policy refused
    ├── Unavailable         a peer or resource cannot be reached now
    ├── Timeout             an operation ran past its deadline
    └── SystemFailure       the kernel failed a call the engine needed
"""

from __future__ import annotations


class DockyardError(Exception):
    """Base of all user-facing errors: ``str()`` is the one line shown to the user."""

    exit_code: int = 125


class InvalidArgument(DockyardError):
    """The input is malformed or out of range."""


class NotFound(DockyardError):
    """The named object does not exist."""


class Conflict(DockyardError):
    """The object exists already, or its state forbids the operation."""


class PermissionDenied(DockyardError):
    """The kernel or a policy refused the operation."""


class Unavailable(DockyardError):
    """A resource or peer cannot be reached now; trying again may work."""


class Timeout(DockyardError):
    """An operation did not finish before its deadline."""


class SystemFailure(DockyardError):
    """A system call the operation depends on failed."""


class CannotExecute(DockyardError):
    """The container's command exists but cannot be executed (Docker's 126)."""

    exit_code = 126


class CommandNotFound(DockyardError):
    """The container's command does not exist (Docker's 127)."""

    exit_code = 127
