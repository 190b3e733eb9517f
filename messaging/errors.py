"""Domain errors raised by services; views translate them into HTTP answers."""


class HeraldError(Exception):
    code = "error"


class OptedOut(HeraldError):
    code = "opted_out"


class ProviderNotEnabled(HeraldError):
    code = "provider_not_enabled"


class NotResendable(HeraldError):
    code = "not_resendable"


class NotCancellable(HeraldError):
    code = "not_cancellable"


class ProviderNotAllowed(ProviderNotEnabled):
    """The client's `allowed_providers` does not include the provider asked for."""

    code = "provider_not_allowed"


class IdempotencyConflict(HeraldError):
    """An Idempotency-Key this client already used, with another request."""

    code = "idempotency_conflict"


class InvalidRequest(HeraldError):
    """Input a service refused; `field` names the request field it concerns, when one does."""

    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class InvalidHeader(HeraldError):
    code = "invalid_header"


class AlreadyResent(HeraldError):
    """A second resend of the same message, without saying it is meant (staff: "send again
    anyway" with a reason)."""

    code = "already_resent"


class CallbackNotConfigured(HeraldError):
    code = "callback_not_configured"
