"""Errors the dispatcher raises. Each message names the backend, what was wrong and what to do."""


class Fp8Error(RuntimeError):
    """Base class of rocm_fp8's runtime errors (bad arguments raise ValueError/TypeError)."""


class BackendUnavailableError(Fp8Error):
    """An explicitly requested backend cannot run here or cannot run this problem."""


class UnsafeBackendError(Fp8Error):
    """An explicitly requested backend is known (ledger) or measured (probe) to be wrong here."""


class BackendFailedError(Fp8Error):
    """A backend raised while running; the original exception is chained as ``__cause__``."""


class NoBackendError(Fp8Error):
    """Automatic selection found no backend that can run the problem safely."""
