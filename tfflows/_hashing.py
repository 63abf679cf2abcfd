"""Counter-based hashing in integer multiplications and remainders.

Plain int64 ops (Mul, FloorMod): the same values in TensorFlow, under XLA
and in ONNX Runtime, with no random op (which tf2onnx cannot convert) and
no unsigned or bitwise op (which oneDNN does not take on every CPU and
logs about). Used for Hutchinson's probes (`tfflows.bijectors.ode`) and
flow matching's validation draws (`tfflows.objectives`).
"""

import tensorflow as tf

__all__ = ["MODULUS", "mix", "keyed_stream"]

# A prime modulus: every product below stays under 2**62 in int64.
MODULUS = 2**31 - 1
# (multiplier, offset) of the rounds.
_ROUNDS = ((48271, 12345), (69621, 987654321), (16807, 555555555))


def mix(h):
    """Scrambles int64 values in [0, MODULUS): per round, a multiplication
    and a squaring modulo the prime (the squaring makes it non-linear)."""
    for multiplier, offset in _ROUNDS:
        h = tf.math.floormod(h * multiplier, MODULUS)
        h = tf.math.floormod(h * h + offset, MODULUS)
    return h


def keyed_stream(key, counters):
    """`mix` of counter `c` under `key` (int64 in [0, MODULUS), broadcast
    against `counters`): keys differ by the multiplier of the counter as
    well as by the offset, so two keys' streams are not shifts of one
    another. Values in [0, MODULUS)."""
    multiplier = 1 + tf.math.floormod(key, MODULUS - 1)
    return mix(tf.math.floormod(tf.math.floormod(counters, MODULUS) * multiplier + key,
                                MODULUS))
