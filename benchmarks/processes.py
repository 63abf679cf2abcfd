"""Running a benchmark function in a process of its own."""

import multiprocessing
from concurrent import futures


def in_new_process(fn, *args):
    """`fn(*args)` in a new "spawn" process, its result returned; this
    process waits idle meanwhile. Keeps torch out of the TensorFlow
    process, and gives a first step the start-up a user's first training
    pays. `fn` must be a module-level function of picklable arguments."""
    with futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()
