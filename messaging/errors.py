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


class CallbackNotConfigured(HeraldError):
    code = "callback_not_configured"
