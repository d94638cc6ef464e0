"""Checkpoints with orbax: the train state and the host-side state of the loop, saved together each epoch.

Layout: ``<run_dir>/checkpoints/<epoch>/{state,host}``; ``state`` is the train-state pytree,
``host`` a JSON dict (epoch, learning-rate controller state with its RNG, best metrics, history).
orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoints intact. ``restore_latest`` falls back to older
checkpoints, with a warning, when the newest cannot be read.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from spinal_jax.train.state import TrainState

log = logging.getLogger(__name__)

_STATE = "state"
_HOST = "host"


class CheckpointWarning(UserWarning):
    """A checkpoint could not be restored and an older one was used instead."""


def state_arrays(state: TrainState) -> dict[str, Any]:
    """The arrays of a train state (``apply_fn`` and ``tx`` are rebuilt from the config on restore)."""
    return {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "rng": state.rng,
    }


def _to_tree(state: Any) -> Any:
    if isinstance(state, TrainState):
        return state_arrays(state)
    if isinstance(state, dict):
        return {k: _to_tree(v) for k, v in state.items()}
    return state


def _from_tree(target: Any, tree: Any) -> Any:
    if isinstance(target, TrainState):
        return target.replace(**tree)
    if isinstance(target, dict):
        return {k: _from_tree(v, tree[k]) for k, v in target.items()}
    return tree


class Checkpointer:
    """Saves ``(state, host)`` under ``directory`` each epoch and keeps the last ``keep``.

    ``state`` is a ``TrainState`` or a dict whose ``"state"`` entry is one (other entries: extra
    arrays such as kept best weights); ``host`` is a JSON dict holding at least ``"epoch"``.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"checkpoint_keep={keep!r}: expected a positive int (how many checkpoints to keep)")
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(_STATE, _HOST))

    def steps(self) -> list[int]:
        """Saved checkpoint numbers (completed epochs), oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, epoch: int, state: TrainState | dict[str, Any], host: dict[str, Any]) -> None:
        """Save after ``epoch`` completed epochs (asynchronously when enabled).

        The arrays are copied first, so that the save never reads buffers the trainer donates to its
        next step while an asynchronous save is still in flight.
        """
        tree = jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, _to_tree(state))
        args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(tree), _HOST: ocp.args.JsonSave(host)})
        self._manager.save(epoch, args=args, force=True)

    def restore(self, epoch: int, target: Any) -> tuple[Any, dict[str, Any]]:
        """The checkpoint of ``epoch``, restored into the structure and shardings of ``target``."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_tree(target))
        args = ocp.args.Composite(
            **{_STATE: ocp.args.StandardRestore(abstract), _HOST: ocp.args.JsonRestore()}
        )
        restored = self._manager.restore(epoch, args=args)
        tree, host = restored[_STATE], restored[_HOST]
        if not isinstance(host, dict) or host.get("epoch") != epoch:
            raise ValueError(f"checkpoint {epoch}: host state is missing or names another epoch")
        return _from_tree(target, tree), host

    def restore_latest(self, target: Any) -> tuple[Any, dict[str, Any]] | None:
        """The newest readable checkpoint, or None when there is none.

        A checkpoint that fails to restore (corrupt or partial files) is skipped with a
        ``CheckpointWarning``, moved to ``<directory>/../checkpoints_corrupt/`` (so that its epoch
        can be saved again) and the one before it is tried.
        """
        for epoch in reversed(self.steps()):
            try:
                return self.restore(epoch, target)
            except Exception as err:  # orbax/tensorstore raise many types for damaged files
                moved = self._quarantine(epoch)
                reason = str(err).splitlines()[0] if str(err) else ""
                message = (
                    f"checkpoint {os.path.join(self.directory, str(epoch))} could not be restored "
                    f"({type(err).__name__}: {reason}); moved to {moved}; falling back to the one before"
                )
                warnings.warn(message, CheckpointWarning, stacklevel=2)
                log.warning(message)
        return None

    def _quarantine(self, epoch: int) -> str:
        src = os.path.join(self.directory, str(epoch))
        dst_dir = os.path.join(os.path.dirname(self.directory), "checkpoints_corrupt")
        os.makedirs(dst_dir, exist_ok=True)
        dst = os.path.join(dst_dir, str(epoch))
        suffix = 0
        while os.path.exists(dst):
            suffix += 1
            dst = os.path.join(dst_dir, f"{epoch}.{suffix}")
        if jax.process_index() == 0:
            os.replace(src, dst)
        self._manager.reload()
        return dst

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
