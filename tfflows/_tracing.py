"""`traced_once`: tf.functions made per flow, kept out of TF's retracing warning."""

import inspect

import tensorflow as tf

__all__ = ["traced_once"]


def traced_once(function):
    """Marks `function` (a `tf.function`, or a plain function holding some
    in its closure, as Keras's train, test and predict functions do) as
    traced once per object, and returns it.

    TF's frequent-retracing warning counts traces per Python code object,
    not per `tf.function`: functions made anew for every flow from one
    definition (a flow's graph cache, a diagnostic callback, an imputation
    sampler, a training step, Keras's own train function) look like one
    function retracing as soon as a process uses five flows briefly (a
    notebook comparing them, a benchmark), though none traced twice for
    its own inputs. Closures are followed through plain functions only
    (never into a model or layer), best-effort: should Keras's change, its
    warning comes back and nothing else does.
    """
    pending, seen = [function], set()
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, tf.types.experimental.PolymorphicFunction):
            item._omit_frequent_tracing_warning = True
            item = item.python_function
        if inspect.isfunction(item):
            pending.extend(cell.cell_contents for cell in item.__closure__ or ()
                           if _is_set(cell))
            if hasattr(item, "__wrapped__"):
                pending.append(item.__wrapped__)
    return function


def _is_set(cell):
    try:
        cell.cell_contents
    except ValueError:  # a closure variable not assigned yet
        return False
    return True
