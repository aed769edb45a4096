"""Orbax's ocp.checkpoint_managers: the manager and its policies, handed on
from ckpt.manager and ckpt.policies (as Orbax's package of that name hands
on its modules)."""

from ckpt.manager import CheckpointManager, CheckpointManagerOptions
from ckpt.policies import (
    PolicyCheckpointInfo, DecisionContext, PreservationContext,
    SaveDecisionPolicy, FixedIntervalPolicy, SpecificStepsPolicy,
    ContinuousCheckpointingPolicy, PreemptionCheckpointingPolicy,
    InitialSavePolicy, AnySavePolicy, PreservationPolicy, PreserveAll,
    LatestN, EveryNSeconds, EveryNSteps, EveryNStepsClosest, CustomSteps,
    BestN, LatestDuration, AnyPreservationPolicy, preservation_policy,
    save_decision_policy)
