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
