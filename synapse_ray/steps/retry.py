"""Retry policy for a step (or a simple action)."""

from __future__ import annotations

from dataclasses import dataclass, field

from synapse_ray.errors import ConfigurationError


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to try again.

    ``retry_on`` names the exception types worth another attempt; anything
    else fails at once. ``StepResult(success=False)`` is a deliberate answer
    from the step and is never retried.
    """

    max_attempts: int = 1
    delay: float = 0.0
    backoff: float = 2.0
    max_delay: float = 60.0
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy.max_attempts must be an integer >= 1, got {self.max_attempts!r}"
            )
        if self.delay < 0 or self.max_delay < 0:
            raise ConfigurationError(f"RetryPolicy.delay must be >= 0, got {self.delay!r}")
        if self.backoff < 1:
            raise ConfigurationError(f"RetryPolicy.backoff must be >= 1, got {self.backoff!r}")
        bad = [t for t in self.retry_on if not (isinstance(t, type) and issubclass(t, BaseException))]
        if bad:
            raise ConfigurationError(f"RetryPolicy.retry_on must hold exception types, got {bad!r}")

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        return attempt < self.max_attempts and isinstance(exc, self.retry_on)

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_delay, self.delay * (self.backoff ** (attempt - 1)))


NO_RETRY = RetryPolicy()


class CrashBudget:
    """How many times a dead worker may be replaced before the failure stands.

    A crash (node lost, OOM kill, ``os._exit``) says nothing about the step's
    code, so it is retried whatever the step's ``RetryPolicy`` says, but only
    ``retries`` times. The orchestrator keeps one per step; the Ray task mode,
    where the whole run is one worker, keeps one per run on the driver.
    """

    def __init__(self, retries: int = 0) -> None:
        self.retries = max(0, int(retries))
        self.used = 0

    def spend(self) -> bool:
        """Use one retry if any is left; False means the crash is final."""
        if self.used >= self.retries:
            return False
        self.used += 1
        return True
