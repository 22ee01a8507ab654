"""The handle a module's forward hooks are registered with."""

from __future__ import annotations

import itertools


class HookHandle:
    """What ``register_forward_hook`` / ``register_forward_pre_hook`` return.

    ``remove()`` unregisters the hook (twice is fine); as a context manager it removes the
    hook when the block ends. ``id`` is unique for the whole process.
    """

    def __init__(self, hooks: dict, key: int, with_kwargs: set) -> None:
        self.hooks, self.id, self._with_kwargs = hooks, key, with_kwargs

    def remove(self) -> None:
        """Unregister the hook."""
        self.hooks.pop(self.id, None)
        self._with_kwargs.discard(self.id)

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


# Keys are unique for the whole process, so a stale handle can never remove a newer hook.
hook_ids = itertools.count()
