"""The two optimizers of the bilevel search, with PyTorch semantics.

DARTS' reference uses coupled L2 weight decay (grad += wd * w before the
momentum / Adam moments), PyTorch's momentum buffer (buf = mu*buf + g;
w -= lr*buf) and PyTorch's Adam epsilon placement.  Keras' optimizers differ
on all three (decoupled decay, lr folded into the momentum, eps inside the
bias correction) and sum gradients across replicas themselves, which clashes
with clipping by the *global* gradient norm.  These optimizers are small
`tf.Module`s: they expect gradients that are already all-reduced, update the
(mirrored) variables identically on every replica through `merge_call`, and
checkpoint through `tf.train.Checkpoint` like any trackable.
"""

import functools

import tensorflow as tf


def _tf_variable(v):
    return getattr(v, "value", v) if not isinstance(v, tf.Variable) else v


def clip_by_global_norm(grads, clip_norm):
    """(grads scaled to a global norm of at most `clip_norm`, their global norm):
    `tf.clip_by_global_norm`'s arithmetic op for op, without the Identity it wraps
    every result in (1,399 of the search step's graph nodes, BUILD_NOTES.md 4.17).
    None entries stay None."""
    norm = tf.linalg.global_norm(grads)
    clip = tf.constant(clip_norm, norm.dtype)
    scale = clip * tf.minimum(1.0 / norm, tf.constant(1.0, norm.dtype) / clip)
    scale = scale + (norm - norm)  # A NaN or infinite norm makes every value NaN.

    def scaled(g):
        if isinstance(g, tf.IndexedSlices):
            return tf.IndexedSlices(g.values * tf.cast(scale, g.dtype), g.indices, g.dense_shape)
        return None if g is None else g * tf.cast(scale, g.dtype)
    return [scaled(g) for g in grads], norm


def assign_all(variables, values):
    """Sets (mirrored) `variables` to `values`, the same on every replica; call
    in a replica context (a plain assign there is refused for mirrored ones)."""
    variables = [_tf_variable(v) for v in variables]

    def merge_fn(strategy, values):
        for v, value in zip(variables, values):
            strategy.extended.update(v, lambda var, x: var.assign(x), args=(value,),
                                     group=False)

    tf.distribute.get_replica_context().merge_call(merge_fn, args=(list(values),))


class _Optimizer(tf.Module):
    """Slot bookkeeping and the replica-safe apply.

    Subclasses name their slots in `slot_names` and define
    `_update(var, grad, *slots, hyper, step)` for one variable on one device;
    `hyper` holds the update's scalars as tensors, made once per apply
    (`_hyper`: a Python float in each of the search step's 1,400 updates would
    be 1,400 more graph constants).
    """

    slot_names = ()

    def __init__(self, variables, learning_rate, weight_decay, name):
        super().__init__(name=name)
        self.learning_rate = tf.Variable(float(learning_rate), trainable=False,
                                         dtype=tf.float32, name="learning_rate")
        self.iterations = tf.Variable(0, trainable=False, dtype=tf.int64, name="iterations")
        self.weight_decay = float(weight_decay)
        # One list per slot kind, index-aligned with `variables` (created now, in
        # the caller's strategy scope, so a lazy build never happens in a step).
        self.slots = {slot: [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                         name=f"{slot}_{i}")
                             for i, v in enumerate(variables)]
                      for slot in self.slot_names}
        self._num_variables = len(variables)

    def _hyper(self, lr):
        """The scalars of `_update` as tensors: learning rate, weight decay."""
        return {"lr": lr, "weight_decay": tf.constant(self.weight_decay)}

    def reset(self):
        """Forgets all state (slots, step count): the optimizer of a fresh run."""
        for slot_vars in self.slots.values():
            for v in slot_vars:
                v.assign(tf.zeros_like(v))
        self.iterations.assign(0)

    def apply(self, grads, variables, row_masks=None, active=None):
        """Applies all-reduced `grads` to `variables`; call in a replica context.

        A variable whose gradient is None is left untouched (no decay, no
        momentum), as torch.optim skips parameters without a gradient.
        row_masks: per variable, None or a 0/1 vector over its first axis: only
        rows with 1 change (values and slots), as a lazy optimizer updates only
        the rows a sparse gradient touches.
        active: per variable, None or a 0/1 scalar tensor; 0 = treat the gradient
        as None (it must be zero): the variable and its slots stay exactly as
        they are.  For a traced step in which a variable may or may not be used
        (EDAS's clamped ops); only optimizers with `_update_active`.
        """
        if len(variables) != self._num_variables:
            raise ValueError(f"{self.name}: built for {self._num_variables} variables, "
                             f"got {len(variables)}")
        variables = [_tf_variable(v) for v in variables]

        def merge_fn(strategy, grads):
            step = tf.cast(self.iterations + 1, tf.float32)
            hyper = self._hyper(tf.identity(self.learning_rate))
            scalars = {}  # id(active flag) -> its `_active_scalars`.
            for i, (g, v) in enumerate(zip(grads, variables)):
                if g is None:
                    continue
                slots = [self.slots[s][i] for s in self.slot_names]
                mask = None if row_masks is None else row_masks[i]
                update = self._update if mask is None else _masked(self._update, mask)
                if active is not None and active[i] is not None:
                    key = id(active[i])  # Variables of one op share their scalars.
                    if key not in scalars:
                        scalars[key] = self._active_scalars(tf.cast(active[i], tf.float32),
                                                            hyper)
                    update = functools.partial(self._update_active, scalars=scalars[key])
                strategy.extended.update(v, update, args=(g, *slots, hyper, step), group=False)
            strategy.extended.update(self.iterations, lambda it: it.assign_add(1), group=False)

        tf.distribute.get_replica_context().merge_call(merge_fn, args=(list(grads),))


def _masked(update, row_mask):
    """`update` (which assigns a variable and its slots) confined to the rows
    where `row_mask` is 1: the other rows get their old values back."""

    def masked_update(var, *args):
        variables = [var] + [a for a in args if isinstance(a, tf.Variable)]
        old = [tf.identity(v) for v in variables]
        with tf.control_dependencies(old):
            result = update(var, *args)
        with tf.control_dependencies([result] if result is not None else []):
            keep = tf.reshape(tf.cast(row_mask, var.dtype), [-1] + [1] * (var.shape.rank - 1))
            return tf.group([v.assign(keep * v + (1.0 - keep) * o)
                             for v, o in zip(variables, old)])
    return masked_update


class MomentumSGD(_Optimizer):
    """SGD with momentum and coupled L2 (torch.optim.SGD, dampening 0, no Nesterov)."""

    slot_names = ("momentum",)

    def __init__(self, variables, learning_rate, momentum=0.9, weight_decay=0.0, name="sgd"):
        super().__init__(variables, learning_rate, weight_decay, name)
        self.momentum = float(momentum)

    def _hyper(self, lr):
        return {**super()._hyper(lr), "momentum": tf.constant(self.momentum)}

    def _update(self, var, grad, buf, hyper, step):
        if self.weight_decay:
            grad = grad + hyper["weight_decay"] * var
        # TF's fused kernel has PyTorch's semantics: buf = mu*buf + g; var -= lr*buf.
        return tf.raw_ops.ResourceApplyMomentum(
            var=var.handle, accum=buf.handle, lr=hyper["lr"], grad=grad,
            momentum=hyper["momentum"], use_locking=False, use_nesterov=False)

    def _active_scalars(self, active, hyper):
        """(lr, momentum, weight decay) of `_update_active` for a 0/1 flag."""
        return (hyper["lr"] * active, hyper["momentum"] * active + (1.0 - active),
                hyper["weight_decay"] * active)

    def _update_active(self, var, grad, buf, hyper, step, scalars):
        """`_update` if the op ran; else buf = 1 * buf + 0 and var -= 0 * buf:
        both bit-identical, in the same one fused kernel (no copies, no select)."""
        lr, momentum, weight_decay = scalars
        if self.weight_decay:
            grad = grad + weight_decay * var
        return tf.raw_ops.ResourceApplyMomentum(
            var=var.handle, accum=buf.handle, lr=lr, grad=grad, momentum=momentum,
            use_locking=False, use_nesterov=False)


class Adam(_Optimizer):
    """Adam with coupled L2 (torch.optim.Adam, amsgrad off)."""

    slot_names = ("m", "v")

    def __init__(self, variables, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 weight_decay=0.0, name="adam"):
        super().__init__(variables, learning_rate, weight_decay, name)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _update(self, var, grad, m, v, hyper, step):
        lr = hyper["lr"]
        grad = grad + hyper["weight_decay"] * var
        m = m.assign(self.beta_1 * m + (1.0 - self.beta_1) * grad)
        v = v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad))
        correction_1 = 1.0 - tf.pow(self.beta_1, step)
        correction_2 = 1.0 - tf.pow(self.beta_2, step)
        denom = tf.sqrt(v) / tf.sqrt(correction_2) + self.epsilon
        return var.assign_sub((lr / correction_1) * m / denom)
