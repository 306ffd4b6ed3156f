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
    `_update(var, grad, *slots, lr, step)` for one variable on one device.
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
            lr = tf.identity(self.learning_rate)
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
                        scalars[key] = self._active_scalars(tf.cast(active[i], tf.float32), lr)
                    update = functools.partial(self._update_active, scalars=scalars[key])
                strategy.extended.update(v, update, args=(g, *slots, lr, step), group=False)
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

    def _update(self, var, grad, buf, lr, step):
        if self.weight_decay:
            grad = grad + self.weight_decay * var
        # TF's fused kernel has PyTorch's semantics: buf = mu*buf + g; var -= lr*buf.
        return tf.raw_ops.ResourceApplyMomentum(
            var=var.handle, accum=buf.handle, lr=lr, grad=grad, momentum=self.momentum,
            use_locking=False, use_nesterov=False)

    def _active_scalars(self, active, lr):
        """(lr, momentum, weight decay) of `_update_active` for a 0/1 flag."""
        return lr * active, self.momentum * active + (1.0 - active), self.weight_decay * active

    def _update_active(self, var, grad, buf, lr, step, scalars):
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

    def _update(self, var, grad, m, v, lr, step):
        grad = grad + self.weight_decay * var
        m = m.assign(self.beta_1 * m + (1.0 - self.beta_1) * grad)
        v = v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad))
        correction_1 = 1.0 - tf.pow(self.beta_1, step)
        correction_2 = 1.0 - tf.pow(self.beta_2, step)
        denom = tf.sqrt(v) / tf.sqrt(correction_2) + self.epsilon
        return var.assign_sub((lr / correction_1) * m / denom)
