"""What every explicit `strategy.run` step here shares: feeding global batches to
the replicas, summing replica outputs and all-reducing gradients.

The search step (`search_step.BilevelSearch`) and the training step
(`train_step.NetworkTraining`) take GLOBAL batches and scale losses by the
global batch size, so one device, several local devices (MirroredStrategy) and
several workers (MultiWorkerMirroredStrategy) compute the same update.
"""

import tensorflow as tf


def distribute(strategy, dataset):
    """A dataset of global batches -> an iterable of per-replica batches.

    Replica k of n gets rows [k * b // n, (k + 1) * b // n) of every global
    batch of b rows.  Every worker reads the same (deterministic) global
    stream and keeps only its own replicas' slices, so a run's batches, and
    its resume position (= the step count), do not depend on the number of
    workers or devices; no tf.data auto-sharding is involved (BUILD_NOTES.md).
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return dataset

    def worker_dataset(context):
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def local_slices(images, labels):
            size = tf.shape(labels, out_type=tf.int64)[0]

            def replica_slice(r):
                begin = size * (first + r) // replicas
                end = size * (first + r + 1) // replicas
                return images[begin:end], labels[begin:end]

            # Element r of each group of `local` goes to local replica r.
            return tf.data.Dataset.range(local).map(replica_slice)

        return dataset.flat_map(local_slices)

    return strategy.distribute_datasets_from_function(worker_dataset)


def sum_over_replicas(strategy, replica_fn, *args):
    """strategy.run(replica_fn, args), with every output summed over the replicas."""
    per_replica = strategy.run(replica_fn, args=args)
    return tf.nest.map_structure(
        lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), per_replica)


def all_reduce_sum(grads):
    """Sums gradients over the replicas of the current replica context (a no-op,
    and no graph nodes, on one replica).  None (a variable the loss does not
    depend on) stays None."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return list(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    reduced = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                 [grads[i] for i in present]) if present else []
    out = [None] * len(grads)
    for i, g in zip(present, reduced):
        out[i] = g
    return out


def make_gather(strategy):
    """A function: this worker's float vector (the same length on every worker) ->
    a numpy array [replicas, length] of every replica's copy, from every worker.
    Under MultiWorkerMirroredStrategy it is a collective: call it on every
    worker at the same point of the program."""

    @tf.function(autograph=False)
    def gather(values):
        per_replica = strategy.run(lambda: tf.identity(values)[None])
        return strategy.gather(per_replica, axis=0)

    return lambda values: gather(tf.constant(values, tf.float32)).numpy()
