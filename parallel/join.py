"""torch.distributed.algorithms.join: the generic ``Join`` context for uneven inputs.

Ranks that run out of inputs ("join") keep answering the collectives of the ranks still
training, through each ``Joinable``'s ``JoinHook``, until every rank has joined.

Protocol (torch's, one all-reduce of a counter per iteration): an active rank's first
joinable calls ``Join.notify_join_context`` before its collectives — an all-reduce of 1 —
and a joined rank answers it with an all-reduce of 0 in ``__exit__``; the sum is the number
of ranks still active (0: everyone joined). With ``throw_on_early_termination`` a second
all-reduce follows, 1 from a joined rank, so every rank raises at the same iteration.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, NamedTuple

from dtrain._tensor.creation import ones, zeros
from dtrain.parallel import api, collectives
from dtrain.parallel.work import Work

SKEW_WARNING = 1000  # iterations a rank may shadow before it warns (torch's threshold)


class JoinHook:
    """What a joined rank runs: ``main_hook()`` once per iteration of the active ranks
    (shadowing their collectives), ``post_hook(is_last_joiner)`` once all ranks joined."""

    def main_hook(self) -> None:
        """Shadow one training iteration's collectives of the active ranks."""

    def post_hook(self, is_last_joiner: bool) -> None:
        """Run once all ranks joined; ``is_last_joiner`` is True on the ranks that joined
        last (they never ran ``main_hook``)."""


class _JoinConfig(NamedTuple):
    """What a ``Joinable`` reads: whether a join context is on, and its options."""

    enable: bool
    throw_on_early_termination: bool
    is_first_joinable: bool

    @staticmethod
    def construct_disabled_join_config() -> _JoinConfig:
        """The configuration outside any join context."""
        return _JoinConfig(enable=False, throw_on_early_termination=False, is_first_joinable=False)


class Joinable(ABC):
    """A class whose per-iteration collectives a ``Join`` context can shadow. Subclasses
    call ``Joinable.__init__``, implement ``join_hook``, ``join_device`` and
    ``join_process_group``, and call ``Join.notify_join_context(self)`` before each
    iteration's collectives."""

    @abstractmethod
    def __init__(self) -> None:
        super().__init__()
        self._join_config = _JoinConfig.construct_disabled_join_config()

    @abstractmethod
    def join_hook(self, **kwargs: Any) -> JoinHook:
        """The hook a joined rank runs; ``kwargs`` are the ``Join`` context's extras."""

    @property
    @abstractmethod
    def join_device(self) -> Any:
        """The device of the join context's own counters."""

    @property
    @abstractmethod
    def join_process_group(self) -> Any:
        """The group the join context counts active ranks in."""


class Join:
    """Context manager for training on uneven inputs: ``with Join([model, ...]):`` around
    the loop. Collective: every rank of the joinables' group must enter it.

    Args:
        joinables: the participating ``Joinable`` objects (one process group for all);
            their hooks run in this order.
        enable: False turns the context off (inputs known to be even).
        throw_on_early_termination: every rank raises ``RuntimeError`` as soon as one rank
            runs out of inputs, instead of shadowing it.
        **kwargs: passed to every joinable's ``join_hook``.

    Raises:
        ValueError: no joinables, or joinables on different process groups.
    """

    def __init__(
        self,
        joinables: list[Joinable],
        enable: bool = True,
        throw_on_early_termination: bool = False,
        **kwargs: Any,
    ) -> None:
        if len(joinables) == 0:
            raise ValueError("Join: the join context manager requires at least one joinable")
        for joinable in joinables:
            if not hasattr(joinable, "_join_config"):
                raise TypeError(
                    f"Join: {type(joinable).__name__} has no _join_config; a Joinable's "
                    "__init__ must call Joinable.__init__(self)"
                )
        self._process_group = joinables[0].join_process_group
        if any(j.join_process_group is not self._process_group for j in joinables[1:]):
            raise ValueError(
                "Join: the joinables use different process groups; pass joinables of one group"
            )
        self._joinables = list(joinables)
        self._kwargs = kwargs
        self._join_hooks: list[JoinHook] = []
        self._enable = enable
        self._throw_on_early_termination = throw_on_early_termination
        self._device = joinables[0].join_device
        self._rank = api.get_rank(self._process_group)

    def _set_configs(self, enable: bool) -> None:
        for index, joinable in enumerate(self._joinables):
            joinable._join_config = _JoinConfig(
                enable=enable,
                throw_on_early_termination=self._throw_on_early_termination,
                is_first_joinable=index == 0,
            )

    def __enter__(self) -> Join:
        """Make the joinables' hooks and turn their join mode on (torch does both when the
        ``Join`` is constructed, so one never entered leaves them in join mode)."""
        self._join_hooks = [joinable.join_hook(**self._kwargs) for joinable in self._joinables]
        self._set_configs(self._enable)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Shadow the active ranks' iterations until every rank joined, then run the post
        hooks. An exception from the block propagates at once (no shadowing).

        Raises:
            RuntimeError: with ``throw_on_early_termination=True``, on the ranks that ran
                out of inputs while others had some left.
        """
        try:
            if not self._enable or kind is not None:
                return
            is_last_joiner = True
            iterations = 0
            while self._count_active() > 0:
                if iterations == SKEW_WARNING:
                    warnings.warn(
                        f"Join: rank {self._rank} has at least {SKEW_WARNING} fewer inputs "
                        "than other active ranks; this skew slows training",
                        stacklevel=2,
                    )
                if self._throw_on_early_termination:
                    self._notify_procs_to_terminate()
                for hook in self._join_hooks:
                    hook.main_hook()
                is_last_joiner = False
                iterations += 1
            for hook in self._join_hooks:
                hook.post_hook(is_last_joiner)
        finally:
            # Unlike torch, the joinables leave join mode with the context (torch keeps the
            # config, and a DDP forward after the block still sends its join counters).
            for joinable in self._joinables:
                joinable._join_config = _JoinConfig.construct_disabled_join_config()

    def _count_active(self) -> int:
        """Answer the active ranks' ``notify_join_context`` all-reduce with 0."""
        count = zeros(1, device=self._device)
        collectives.all_reduce(count, group=self._process_group)
        return int(count.item())

    def _notify_procs_to_terminate(self) -> None:
        ones_ = ones(1, device=self._device)
        collectives.all_reduce(ones_, group=self._process_group)
        raise RuntimeError(f"Rank {self._rank} exhausted all inputs.")

    @staticmethod
    def notify_join_context(joinable: Joinable) -> Work | None:
        """Tell the join context that this rank has not joined yet (an async all-reduce of
        1, returned), and with ``throw_on_early_termination`` raise if another rank has.
        Only the first joinable of a context communicates; the others get None.

        Collective: every active rank's first joinable calls this once an iteration.

        Raises:
            RuntimeError: another rank ran out of inputs and ``throw_on_early_termination``.
        """
        config = getattr(joinable, "_join_config", None)
        if config is None:
            raise TypeError(
                f"notify_join_context: {type(joinable).__name__} has no _join_config; its "
                "__init__ must call Joinable.__init__(self)"
            )
        if not config.is_first_joinable or not config.enable:
            return None
        device, group = joinable.join_device, joinable.join_process_group
        work = collectives.all_reduce(ones(1, device=device), group=group, async_op=True)
        if config.throw_on_early_termination:
            flag = zeros(1, device=device)
            collectives.all_reduce(flag, group=group)
            if flag.item():
                raise RuntimeError(
                    "Detected at least one rank that exhausted inputs. Throwing across all ranks."
                )
        return work


__all__ = ["Join", "JoinHook", "Joinable"]
