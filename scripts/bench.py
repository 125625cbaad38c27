"""Benchmark microgpt: Part II (FAST = True) against Part I alone, and what each trick buys.

    python scripts/bench.py            # CPython
    pypy3 scripts/bench.py             # PyPy
    python scripts/bench.py --steps 60 --chunk 20     # quicker
    python scripts/bench.py --steps 1000              # the whole default run (CPython: ~15 min)

It trains the default model on names.txt from the same initial weights in four ways: as
`python microgpt.py` does (FAST = True: all of Part II), Part I alone (FAST = False, as with
--plain: one node per + and *, no tape; the command line pauses CPython's collector either
way), Part I's atomic graph with Part II's tape (so the fused nodes' own gain shows), and
a textbook engine (constants as nodes, recursive sort, the collector on). The runs take turns, a chunk of steps at a time, so that all see the same
machine load; it prints the median milliseconds per step of each, the ratios, and the
runs' losses at the same steps (they must agree). Then it measures, the same way, each of
the engine's choices changed in turn, forward passes on floats against Values, and the
speed of sampling; --whole-runs N also times whole runs with and without the collector
switch. The learning rate decays over --steps, so with --steps 1000 every run is exactly
the default training run. Nothing here is a test: it only measures and prints.
"""

import argparse
import gc
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import microgpt  # noqa: E402


def setup(seed=42):
    """The data and the initial weights exactly as `python microgpt.py` makes them."""
    rng = random.Random(seed)
    docs = microgpt.split_documents(microgpt.read_text(microgpt.default_data_path()))
    chars = microgpt.build_vocab("".join(docs))
    train_docs, _ = microgpt.train_val_split(docs, rng)
    config = microgpt.Config()
    params = microgpt.init_params(config, len(chars) + 1, rng)
    return config, chars, train_docs, params


def copy_params(params, kind=microgpt.Value):
    return {name: [[kind(p.data) for p in row] for row in m] for name, m in params.items()}


class TextbookValue(microgpt.Value):
    """The textbook engine, as in micrograd and the original microgpt gist, for comparison:
    every constant becomes a leaf node, and backward sorts the graph recursively. It
    subclasses microgpt.Value only so that Part I's model functions treat it as a Value."""
    __slots__ = ()

    def __add__(self, other):
        other = other if isinstance(other, TextbookValue) else TextbookValue(other)
        return TextbookValue(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other):
        other = other if isinstance(other, TextbookValue) else TextbookValue(other)
        return TextbookValue(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, k):
        return TextbookValue(self.data ** k, (self,), (k * self.data ** (k - 1),))

    def log(self):
        return TextbookValue(math.log(self.data), (self,), (1 / self.data,))

    def exp(self):
        return TextbookValue(math.exp(self.data), (self,), (math.exp(self.data),))

    def relu(self):
        return TextbookValue(max(0, self.data), (self,), (float(self.data > 0),))

    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other ** -1

    def __rtruediv__(self, other):
        return other * self ** -1

    def backward(self):
        topo, visited = [], set()

        def build_topo(v):
            if v not in visited:
                visited.add(v)
                for child in v._children:
                    build_topo(child)
                topo.append(v)
        build_topo(self)
        self.grad = 1
        for v in reversed(topo):
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * v.grad


def timed_chunks(runs, steps, chunk):
    """runs: name -> (FAST flag, step function returning the loss). Alternate `chunk` steps
    of each until every run has done `steps`; return name -> (ms per step list, losses)."""
    results = {name: ([], []) for name in runs}
    names = list(runs)
    for round_ in range(0, steps, chunk):
        # Rotate the order every round, so that no run always follows the same other run.
        turn = round_ // chunk % len(names)
        for name in names[turn:] + names[:turn]:
            fast, step = runs[name]
            microgpt.FAST = fast
            times, losses = results[name]
            for _ in range(min(chunk, steps - round_)):    # the last turn may be shorter
                start = time.perf_counter()
                losses.append(step())
                times.append(1000 * (time.perf_counter() - start))
    microgpt.FAST = True
    gc.enable()
    return results


def training_run(params, config, batches, steps, gc_off):
    """A step function that advances microgpt.train by one step. Each step function sets
    the collector as its run needs it, since the runs take turns."""
    steps_iter = microgpt.train(params, config, batches, steps)

    def step():
        (gc.disable if gc_off else gc.enable)()
        return next(steps_iter)
    return step


def backward_skipping_zeros(loss, tape):
    """microgpt.backward_along, but not passing on a zero gradient (a trick microgpt leaves
    out: it did not save a measurable share of the step)."""
    loss.grad = 1.0
    for node in reversed(tape if tape is not None else loss.topological_order()):
        g = node.grad
        if g == 0.0:
            continue
        for child, local in zip(node._children, node._local_grads):
            child.grad += local * g


fused_mlp_of_microgpt = microgpt.fast_mlp


def unfused_mlp(x, w1, w2):
    """microgpt.fast_mlp without its fusion: fused linear layers, one ReLU node per hidden
    unit, and every unit in the second layer's sums, on or off."""
    return microgpt.fast_linear([h.relu() for h in microgpt.fast_linear(x, w1)], w2)


def manual_run(params, config, batches, steps, use_tape, gc_off, skip_zeros=False, fuse_mlp=True):
    """One training step done by hand, so a single trick can be left out."""
    flat = microgpt.flatten(params)
    m, v = [0.0] * len(flat), [0.0] * len(flat)
    counter = [0]

    def step():
        i = counter[0]
        counter[0] += 1
        (gc.disable if gc_off else gc.enable)()
        microgpt.fast_mlp = fused_mlp_of_microgpt if fuse_mlp else unfused_mlp
        batch, total = batches(i), 0.0
        for tokens in batch:                 # as microgpt.add_gradient does, one document at a time
            microgpt.Value.tape = [] if use_tape else None
            loss = microgpt.document_loss(tokens, params, config)
            share = loss * (1 / len(batch))
            tape, microgpt.Value.tape = microgpt.Value.tape, None
            if skip_zeros:
                backward_skipping_zeros(share, tape)
            elif use_tape:
                microgpt.backward_along(share, tape)
            else:
                share.backward()
            total += loss.data
        microgpt.fast_mlp = fused_mlp_of_microgpt
        microgpt.adam_update(flat, m, v, i, steps, config)
        return total / len(batch)
    return step


def report(results, baseline, contender):
    base = statistics.median(results[baseline][0])
    fast = statistics.median(results[contender][0])
    print(f"  {baseline:<28} {base:8.2f} ms/step (median)")
    print(f"  {contender:<28} {fast:8.2f} ms/step (median)")
    print(f"  ratio: {contender} is {base / fast:.2f}x faster")
    return base, fast


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per run (default 200)")
    parser.add_argument("--chunk", type=int, default=50, help="steps per turn when alternating (default 50)")
    parser.add_argument("--names", type=int, default=500, help="names to sample for the sampling speed")
    parser.add_argument("--whole-runs", type=int, default=0, metavar="N",
                        help="also time N pairs of whole 500-step runs of microgpt.py, with and without "
                             "switching the garbage collector off (CPython; about 20 s a pair)")
    args = parser.parse_args()
    cython = sys.implementation.name == "cpython"
    sys.setrecursionlimit(100000)     # the textbook engine's recursive sort needs the room
    print(f"interpreter: {platform.python_implementation()} {platform.python_version()} "
          f"({' '.join(sys.version.split())}) on {platform.machine()}, {os.cpu_count()} cores")

    config, chars, train_docs, params = setup()
    batches = microgpt.document_batches(microgpt.encode_documents(train_docs, chars), 1)

    # 1. Part I alone against all of Part II, both through microgpt.train.
    print(f"\n1. Part I alone vs Part II, {args.steps} steps each, alternating {args.chunk} at a time")
    trained = copy_params(params)       # the fast run's weights, trained, for section 3
    runs = {"Part I alone (FAST = False)": (False, training_run(copy_params(params), config, batches, args.steps,
                                                                gc_off=cython)),
            "Part II (FAST = True)": (True, training_run(trained, config, batches, args.steps, gc_off=cython)),
            "atomic + tape + collector": (False, manual_run(copy_params(params), config, batches, args.steps,
                                                            use_tape=True, gc_off=cython)),
            "textbook engine": (False, manual_run(copy_params(params, TextbookValue), config, batches,
                                                  args.steps, use_tape=False, gc_off=False))}
    results = timed_chunks(runs, args.steps, args.chunk)
    _, fused_ms = report(results, "Part I alone (FAST = False)", "Part II (FAST = True)")
    for name, what in (("atomic + tape + collector", "Part I's atomic graph with the tape"),
                       ("textbook engine", "textbook engine (constants as nodes, recursive sort)")):
        ms = statistics.median(results[name][0])
        print(f"  {what + ':':<62} {ms:8.2f} ms/step, Part II is {ms / fused_ms:.1f}x faster")
    other_losses = results["atomic + tape + collector"][1] + results["textbook engine"][1]
    atomic_losses = results["Part I alone (FAST = False)"][1]
    fused_losses = results["Part II (FAST = True)"][1]
    worst = max(abs(a - f) / abs(a) for a, f in zip(atomic_losses + other_losses, fused_losses * 3))
    print("  loss at step:   " + "  ".join(f"{s:>8d}" for s in range(0, args.steps, max(1, args.steps // 6))))
    print("  Part I alone:   " + "  ".join(f"{atomic_losses[s]:8.5f}" for s in range(0, args.steps, max(1, args.steps // 6))))
    print("  Part II:        " + "  ".join(f"{fused_losses[s]:8.5f}" for s in range(0, args.steps, max(1, args.steps // 6))))
    print(f"  largest relative loss difference, any run against Part II, over all {args.steps} steps: {worst:.1e}"
          + ("  (agree to 1e-9)" if worst <= 1e-9 else "  (DISAGREE)"))
    print(f"  the default 1000 steps at this speed: {fused_ms:.1f} s of training\n")

    # 2. The engine's other tricks, each left out in turn (fused graph).
    print(f"\n2. one trick at a time: microgpt's choices (Part II), then each changed in turn, "
          f"{args.steps} steps each, alternating")
    # The collector is switched off on CPython only: under PyPy, "switched off" is the variant.
    gc_variant = "garbage collector on" if cython else "garbage collector off"
    tricks = {"as in microgpt": manual_run(copy_params(params), config, batches, args.steps, True, cython),
              "backward searches the graph": manual_run(copy_params(params), config, batches, args.steps, False, cython),
              "MLP not fused": manual_run(copy_params(params), config, batches, args.steps, True,
                                          cython, fuse_mlp=False),
              "+ skipping zero gradients": manual_run(copy_params(params), config, batches, args.steps, True,
                                                      cython, skip_zeros=True),
              gc_variant: manual_run(copy_params(params), config, batches, args.steps, True, not cython)}
    results = timed_chunks({name: (True, step) for name, step in tricks.items()}, args.steps, args.chunk)
    base = statistics.median(results["as in microgpt"][0])
    for name in tricks:
        ms = statistics.median(results[name][0])
        gain = "" if name == "as in microgpt" else f"  ({100 * (ms / base - 1):+.0f}% time per step)"
        print(f"  {name:<28} {ms:8.2f} ms/step{gain}")

    # 3. Forward passes without a gradient run on plain floats: measure what that buys,
    # then the speed of sampling itself.
    seqs = [microgpt.encode_document(doc, chars) for doc in train_docs[:args.names]]
    seconds = {}
    for name, w in (("plain floats", microgpt.weights_of(params)), ("Values", params)):
        start = time.perf_counter()
        microgpt.mean_token_loss(seqs, w, config)
        seconds[name] = time.perf_counter() - start
    print(f"3. loss of {len(seqs)} names without backward (as for the validation loss)")
    for name, s in seconds.items():
        print(f"  {name:<28} {1000 * s:8.0f} ms")
    print(f"  ratio: plain floats are {seconds['Values'] / seconds['plain floats']:.1f}x faster")
    weights, rng = microgpt.weights_of(trained), random.Random(1)
    start = time.perf_counter()
    names = [microgpt.sample_document(weights, config, chars, rng, 0.5) for _ in range(args.names)]
    seconds = time.perf_counter() - start
    print(f"  sampling: {args.names / seconds:.0f} names/s (the fused run's weights after {args.steps} steps; "
          f"{sum(map(len, names)) / len(names):.1f} characters per name)")
    if args.whole_runs and cython:
        whole_runs(args.whole_runs)


def whole_runs(pairs):
    """Time `microgpt.py --steps 500` in fresh processes, alternately as it is and with the
    garbage-collector switch disabled, since the switch matters most with the real heap."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    patch = ("import gc, sys; sys.path.insert(0, %r); import microgpt; "
             "microgpt.gc = type('NoSwitch', (), {'isenabled': staticmethod(gc.isenabled), "
             "'disable': staticmethod(lambda: None), 'enable': staticmethod(gc.enable)}); "
             "sys.exit(microgpt.main(sys.argv[1:]))") % repo
    commands = {"collector off during training (as in microgpt)": [sys.executable, os.path.join(repo, "microgpt.py")],
                "collector left on": [sys.executable, "-c", patch]}
    seconds = {name: [] for name in commands}
    for _ in range(pairs):
        for name, command in commands.items():
            out = subprocess.run(command + ["--steps", "500", "--num-samples", "0"], capture_output=True,
                                 text=True, check=True).stdout
            seconds[name].append(float(re.search(r"trained 500 steps in ([\d.]+) s", out).group(1)))
    print(f"\n4. whole runs of microgpt.py --steps 500, {pairs} of each, alternating")
    for name, values in seconds.items():
        print(f"  {name:<50} median {statistics.median(values):5.1f} s  ({', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
