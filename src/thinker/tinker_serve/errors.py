"""The errors a request can fail with. Each says what went wrong and what to do, in one sentence or two.

A failed future carries its category to the SDK (`RequestFailedResponse.category`): `user` for requests the
caller can fix, `server` for everything else. Synchronous routes answer the HTTP status instead.
"""

from __future__ import annotations


class ServeError(Exception):
    """Base class: `status` is the HTTP status a synchronous route answers, `category` the future's."""

    status = 500
    category = "server"


class UserError(ServeError):
    """The request cannot be served as sent (bad input, unsupported option, wrong state)."""

    status = 400
    category = "user"


class NotFound(UserError):
    """The request names something this server does not have (model, checkpoint, session, future)."""

    status = 404


class PayloadTooLarge(UserError):
    """A request body (after decompression) over the server's bound."""

    status = 413
