"""The train state on its mesh, and the checkpoints it is saved to and resumed from.

`TrainState.create` builds the (model, optimizer) state sharded over the mesh, with
`init_from`'s parameters where the config names a folder; `Checkpoints` owns the two Orbax
managers (the latest step to resume from, the best evaluations) and decides when each
saves (levanter's `Checkpointer.on_step`).
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from ptmjax import checkpoint as ckpt
from ptmjax import paths
from ptmjax import sharding as shd
from ptmjax.errors import UsageError, WorkdirError
from ptmjax.models import ModelConfig, create_model, lora
from ptmjax.run_dir import RunDir
from ptmjax.training import optimizer
from ptmjax.training.policies import itstime

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainState:
  """The (model, optimizer) state, its graph definition and shardings.

  wrt: the nnx filter of what the optimizer updates: every parameter, or with LoRA the
    adapters and the parameters `lora.train` names (the rest get no optimizer state and
    no gradient).
  """

  graphdef: object
  state: object
  sharding: object
  wrt: object
  use_lora: bool

  @classmethod
  def create(cls, config, model_cfg: ModelConfig, mesh) -> TrainState:
    lora_cfg = config.get('lora', {})
    use_lora = bool(lora_cfg.get('rank', 0))
    if use_lora and config.optim.get('freeze'):
      raise UsageError('lora.rank and optim.freeze together: LoRA already trains only its adapters')
    wrt = lora.trainable(lora_cfg.train) if use_lora else nnx.Param

    def create_state():
      model = create_model(model_cfg, config.seed)
      if use_lora:
        rngs = nnx.Rngs(params=config.seed + 1)
        lora.add_adapters(model, lora_cfg.targets, lora_cfg.rank, lora_cfg.alpha, rngs)
      model.train()
      tx = optimizer.make_optimizer(config.optim, nnx.state(model, wrt), model_cfg.num_layers)
      return model, nnx.Optimizer(model, tx, wrt=wrt)

    graphdef, abstract_state = nnx.split(nnx.eval_shape(create_state))
    rules = tuple(tuple(r) for r in config.sharding.rules)
    sharding = shd.state_sharding(abstract_state, mesh, rules)
    with jax.set_mesh(mesh):
      state = jax.jit(lambda: nnx.split(create_state())[1], out_shardings=sharding)()
    return cls(graphdef, state, sharding, wrt, use_lora)

  def model(self):
    return nnx.merge(self.graphdef, self.state)[0]

  def load_init_from(self, config) -> None:
    """Replaces the parameters with `init_from.path`'s (params only; heads the folder
    lacks, `init_from.skip` patterns and LoRA adapters keep their fresh values)."""
    params = nnx.state(self.model(), nnx.Param).to_pure_dict()
    skip = tuple(config.init_from.get('skip', ())) + ((lora.ADAPTER_RE,) if self.use_lora else ())
    merged, taken, skipped = ckpt.init_params_from(params, config.init_from.path, skip)
    model, opt = nnx.merge(self.graphdef, self.state)
    p_state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(p_state, merged)
    nnx.update(model, p_state)
    self.state = jax.device_put(nnx.split((model, opt))[1], self.sharding)
    log.info('init_from %s: %d parameters loaded, %d skipped', config.init_from.path,
             len(taken), len(skipped))  # fmt: skip

  def restore_tree(self, tree: dict) -> None:
    nnx.replace_by_pure_dict(self.state, ckpt.state_from_tree(tree))


def _barriers(name: str) -> ocp.options.MultiprocessingOptions:
  """Barrier keys of one checkpoint manager. `best` and `latest` save the same step
  (an evaluation on a checkpoint step); with one key space their barriers
  (`_async_write_complete.<step>`) collided on several processes: "Barrier ... is
  already ongoing", one process hung and `latest/<step>` stayed a tmp directory."""
  return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)


def restore_newest_readable(candidates, args, ckpt_dir):
  """(step, restored) from the first readable of `candidates` [(manager, step)]: the latest
  checkpoint, else the best ones, newest first. A truncated latest checkpoint (a full
  disk, a copy cut short) used to end the run with no way back."""
  failures = []
  for manager, step in candidates:
    try:
      return step, manager.restore(step, args=args)
    except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise bare Exceptions
      first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
      failures.append(f'{str(manager.directory).rstrip("/").rsplit("/", 1)[-1]}/{step}: {first}')
      log.warning('checkpoint %s/%d is unreadable (%s); trying an older one',
                  manager.directory, step, first)  # fmt: skip
  raise WorkdirError(
    f'{ckpt_dir}: no readable checkpoint ({"; ".join(failures)}); delete the work dir to start over'
  )


class Checkpoints:
  """`checkpoints/latest` (one step, to resume from) and `checkpoints/best` (the
  `keep_best` best evaluations by `best_metric`), each item the state as a plain nested
  dict (readable with Orbax alone, restored onto whatever mesh resumes it) and a JSON of
  the data position and the best tracker."""

  def __init__(self, config, run_dir: RunDir, train_state: TrainState, before_save=None):
    # `before_save`: the metric writer's flush (on an object store the rows up to a
    # checkpoint are stored with it, so a resumed run finds them).
    self.before_save = before_save or (lambda: None)
    self.dir = paths.absolute(run_dir.checkpoints)
    self.every = config.checkpoint.every_steps
    self.total = config.optim.total_steps
    metric = config.checkpoint.best_metric
    handlers = ckpt.train_state_handlers(self.dir)
    self.latest = ocp.CheckpointManager(
      self.dir / 'latest',
      item_handlers=handlers,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, multiprocessing_options=_barriers('latest')
      ),
    )
    self.best = ocp.CheckpointManager(
      self.dir / 'best',
      item_handlers=ckpt.train_state_handlers(self.dir),
      options=ocp.CheckpointManagerOptions(
        max_to_keep=config.checkpoint.keep_best,
        best_fn=lambda m: m.get(metric, -np.inf),
        best_mode='max',
        create=True,
        multiprocessing_options=_barriers('best'),
      ),
    )
    # The restore target: this run's shardings, whatever the mesh that wrote it (frozen
    # parameters' optimizer state is an empty optax.MaskedNode: kept as it is).
    target = jax.tree.map(
      lambda x, s: (
        x if isinstance(x, optax.MaskedNode) else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
      ),
      ckpt.state_to_tree(train_state.state),
      ckpt.state_to_tree(train_state.sharding),
      is_leaf=lambda x: isinstance(x, optax.MaskedNode),
    )
    self.args = ocp.args.Composite(
      state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()
    )

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore_latest(self) -> tuple[int, dict] | None:
    """(step, {'state', 'data'}) of the newest readable checkpoint, None for a new run."""
    if self.latest.latest_step() is None:
      return None
    steps = [(self.latest, self.latest.latest_step())]
    steps += [(self.best, s) for s in sorted(self.best.all_steps(), reverse=True)]
    return restore_newest_readable(steps, self.args, self.dir)

  def restore_best(self, step: int) -> dict:
    return self.best.restore(step, args=self.args)

  def _save(self, manager, step, state, data: dict, metrics=None) -> None:
    self.before_save()
    manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(ckpt.state_to_tree(state)), data=ocp.args.JsonSave(data)
      ),
      metrics=metrics,
      force=True,
    )

  def on_eval(self, step, state, data: dict, metrics: dict) -> None:
    """Every evaluation goes to `best` (which keeps the `keep_best` best).

    A run stopped after an evaluation's save but before `latest` reached that step
    resumes from an earlier step and evaluates this one again; resumed training equals
    uninterrupted training, so the saved one already holds this state (saving it twice
    raised StepAlreadyExistsError and the run could never finish).
    """
    if step in self.best.all_steps():
      log.info('evaluation at step %d was saved before the interruption; kept', step)
      return
    self._save(self.best, step, state, data, {k: float(v) for k, v in metrics.items()})

  def on_step(self, step, state, data: dict, *, force: bool = False) -> bool:
    """Saves `latest` every `checkpoint.every_steps`, at the last step, or when `force`d
    (an early stop, a preemption); True when this step is saved (now or before: a signal
    on a checkpoint step finds it saved already, and saving it again would raise
    StepAlreadyExistsError)."""
    if not (force or itstime(step, self.every, self.total)):
      return False
    if self.latest.latest_step() != step:
      self._save(self.latest, step, state, data)
    return True

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()
