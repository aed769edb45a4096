"""Save decision and preservation policies (what Orbax has in
ocp.checkpoint_managers, which hands them on). The daemon evaluates them; these classes describe
them. A BestN's get_metric_fn is evaluated here at save time on the step's
metrics and sent to the daemon as a reserved metric."""

import dataclasses
import datetime
from typing import Any, Callable, Iterable, List, Optional, Sequence


@dataclasses.dataclass
class PolicyCheckpointInfo:
    """Orbax's description of one checkpoint given to policies."""
    step: int
    time: Any = None
    metrics: Any = None


@dataclasses.dataclass
class DecisionContext:
    """What a save decision policy is told besides the step."""
    is_saving_in_progress: bool = False
    reached_preemption: bool = False


@dataclasses.dataclass
class PreservationContext:
    """What a preservation policy is told besides the checkpoints."""


def _seconds(v: Any) -> float:
    if isinstance(v, datetime.timedelta):
        return v.total_seconds()
    return float(v)


# ---- save decision policies ------------------------------------------------

class SaveDecisionPolicy:
    """Base of the policies that decide whether a step is saved
    (CheckpointManagerOptions(save_decision_policy=...))."""


@dataclasses.dataclass
class FixedIntervalPolicy(SaveDecisionPolicy):
    """Save the steps divisible by `interval`."""
    interval: int

    def __post_init__(self) -> None:
        if not isinstance(self.interval, int) or self.interval <= 0:
            raise ValueError('interval must be a positive integer, got %r'
                             % (self.interval,))


@dataclasses.dataclass
class SpecificStepsPolicy(SaveDecisionPolicy):
    """Save exactly the given steps."""
    steps: Any

    def __post_init__(self) -> None:
        for s in self.steps:
            if not isinstance(s, int) or s < 0:
                raise ValueError('steps must be non-negative integers, '
                                 'got %r' % (s,))


@dataclasses.dataclass(kw_only=True)
class ContinuousCheckpointingPolicy(SaveDecisionPolicy):
    """Save whenever no save is in progress, at most once per
    minimum_interval_secs (None: no minimum)."""
    minimum_interval_secs: Optional[float] = None

    def __post_init__(self) -> None:
        if (self.minimum_interval_secs is not None and
                self.minimum_interval_secs < 0):
            raise ValueError('minimum_interval_secs must be >= 0')


class PreemptionCheckpointingPolicy(SaveDecisionPolicy):
    """Save the step at which a preemption was signalled."""

    def __repr__(self) -> str:
        return 'PreemptionCheckpointingPolicy()'

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    __hash__ = object.__hash__


class InitialSavePolicy(SaveDecisionPolicy):
    """Save the first step of a manager whose root has no step yet."""

    def __repr__(self) -> str:
        return 'InitialSavePolicy()'

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    __hash__ = object.__hash__


@dataclasses.dataclass
class AnySavePolicy(SaveDecisionPolicy):
    """Save a step when any of `policies` would."""
    policies: Sequence[SaveDecisionPolicy]

    def __post_init__(self) -> None:
        for p in self.policies:
            if not isinstance(p, SaveDecisionPolicy):
                raise TypeError('AnySavePolicy takes save decision policies, '
                                'got %r' % (p,))


# ---- preservation policies ---------------------------------------------------

class PreservationPolicy:
    """Base of the policies that decide which steps are kept
    (CheckpointManagerOptions(preservation_policy=...))."""


@dataclasses.dataclass
class PreserveAll(PreservationPolicy):
    """Keep every step."""


@dataclasses.dataclass
class LatestN(PreservationPolicy):
    """Keep the latest `n` steps (None: all)."""
    n: Optional[int] = None

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 0:
            raise ValueError('n must be >= 0')


@dataclasses.dataclass
class EveryNSeconds(PreservationPolicy):
    """Keep a step at least every interval_secs of save time."""
    interval_secs: float

    def __post_init__(self) -> None:
        if self.interval_secs is None or self.interval_secs < 0:
            raise ValueError('interval_secs must be >= 0')


def _check_every_n(p: Any) -> None:
    if p.interval_steps == 0:
        raise ValueError('interval_steps must not be 0.')
    if p.interval_steps < 0:
        raise ValueError('interval_steps must be positive.')
    if p.max_to_keep is not None and p.max_to_keep < 0:
        raise ValueError('max_to_keep must be None or non-negative.')


@dataclasses.dataclass
class EveryNSteps(PreservationPolicy):
    """exact_interval: keep steps divisible by interval_steps; else the
    first, then each at least interval_steps after the last kept.
    max_to_keep: only the latest that many of those."""
    interval_steps: int
    exact_interval: bool = True
    max_to_keep: Optional[int] = None

    def __post_init__(self) -> None:
        _check_every_n(self)


@dataclasses.dataclass
class EveryNStepsClosest(PreservationPolicy):
    """For each multiple of interval_steps, the closest checkpoint (the
    later one on a tie); always the last one."""
    interval_steps: int
    max_to_keep: Optional[int] = None

    def __post_init__(self) -> None:
        _check_every_n(self)


class CustomSteps(PreservationPolicy):
    """Keep exactly the given steps."""

    def __init__(self, steps: Iterable[int]) -> None:
        self.steps: List[int] = sorted(set(int(s) for s in steps))

    def __repr__(self) -> str:
        return 'CustomSteps(steps=%r)' % (self.steps,)


@dataclasses.dataclass(kw_only=True)
class BestN(PreservationPolicy):
    """Keep the `n` best steps by get_metric_fn(metrics) (the highest, or
    the lowest with reverse=True); steps without metrics are kept when
    keep_checkpoints_without_metrics."""
    get_metric_fn: Callable[[Any], float]
    reverse: bool = False
    n: Optional[int] = None
    keep_checkpoints_without_metrics: bool = True

    def __post_init__(self) -> None:
        if not callable(self.get_metric_fn):
            raise TypeError('get_metric_fn must be callable')
        if self.n is not None and self.n < 0:
            raise ValueError('n must be >= 0')


@dataclasses.dataclass
class LatestDuration(PreservationPolicy):
    """Keep every checkpoint newer than `duration` (a timedelta, or
    seconds) before now, as Orbax's LatestDuration(duration=...)."""
    duration: Any

    def __post_init__(self) -> None:
        if _seconds(self.duration) < 0:
            raise ValueError('duration must be >= 0')

    @property
    def duration_secs(self) -> float:
        """`duration` in seconds."""
        return _seconds(self.duration)


@dataclasses.dataclass
class AnyPreservationPolicy(PreservationPolicy):
    """Keep a step when any of `policies` would."""
    policies: Sequence[PreservationPolicy]

    def __post_init__(self) -> None:
        for p in self.policies:
            if not isinstance(p, PreservationPolicy):
                raise TypeError('AnyPreservationPolicy takes preservation '
                                'policies, got %r' % (p,))


save_decision_policy = None  # filled below for `ocp.checkpoint_managers.save_decision_policy.X`
preservation_policy = None


class _NS:
    """A namespace of policy classes (Orbax's submodules)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


save_decision_policy = _NS(
    SaveDecisionPolicy=SaveDecisionPolicy,
    FixedIntervalPolicy=FixedIntervalPolicy,
    SpecificStepsPolicy=SpecificStepsPolicy,
    ContinuousCheckpointingPolicy=ContinuousCheckpointingPolicy,
    PreemptionCheckpointingPolicy=PreemptionCheckpointingPolicy,
    InitialSavePolicy=InitialSavePolicy,
    AnySavePolicy=AnySavePolicy)
preservation_policy = _NS(
    PreservationPolicy=PreservationPolicy, PreserveAll=PreserveAll,
    LatestN=LatestN, EveryNSeconds=EveryNSeconds, EveryNSteps=EveryNSteps,
    CustomSteps=CustomSteps, BestN=BestN, LatestDuration=LatestDuration,
    AnyPreservationPolicy=AnyPreservationPolicy,
    EveryNStepsClosest=EveryNStepsClosest,
    PreservationContext=PreservationContext)
save_decision_policy.DecisionContext = DecisionContext
