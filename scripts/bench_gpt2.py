"""Benchmark GPT-2 in microgpt: seconds per token against the pure-Python floor, load time
and peak memory, for a model of GPT-2 124M's shape.

    python scripts/bench_gpt2.py                 # CPython
    pypy3 scripts/bench_gpt2.py                  # PyPy
    python scripts/bench_gpt2.py --repeats 9 --model DIR     # a real model folder, more rounds

Without --model it writes random weights of GPT-2 124M's shape (and its 12 attention masks,
as the hub's file has them) as a safetensors folder under /tmp once, and reuses it. Timing
needs no real weights: every token costs the same arithmetic whatever the numbers are.

A token costs about one multiply-add per parameter, almost all of them dot products of a
weight row with a vector. The floor is the time of exactly those dot products, written as
sum(map(mul, row, x)) over the model's float32 rows: the fastest plain Python does them
without math.sumprod. Each round times one token of the model (at position --context) and
then the floor, in turn, so both see the same machine load; it prints the medians and the
ratio (where math.sumprod exists, microgpt uses it, and the ratio may be below 1). Nothing
here is a test: it only measures and prints.
"""

import argparse
import json
import math
import os
import random
import statistics
import struct
import sys
import time
from operator import mul

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import microgpt  # noqa: E402


def write_random_gpt2(folder, config):
    """A safetensors folder of GPT-2's layout and shape with random weights (a pool of a
    million Gaussian numbers, std 0.02, reused at different offsets: fast to make)."""
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(0)
    pool = struct.pack("<1048576f", *(rng.gauss(0, 0.02) for _ in range(2**20)))
    shapes = dict(microgpt.gpt2_shapes(config))
    for i in range(config.n_layer):         # the hub's masks: buffers, not parameters
        shapes[f"h.{i}.attn.bias"] = [1, 1, config.n_positions, config.n_positions]
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    tmp = os.path.join(folder, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name, shape in shapes.items():
            size, start = 4 * math.prod(shape), 4 * rng.randrange(2**18)
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                f.write(struct.pack(f"<{shape[0]}f", *[1.0] * shape[0]))
                continue
            while size > 0:
                chunk = pool[start:start + size]
                f.write(chunk)
                size -= len(chunk)
                start = 0
    os.replace(tmp, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump({"model_type": "gpt2", "n_layer": config.n_layer, "n_embd": config.n_embd, "n_head": config.n_head,
                   "n_positions": config.n_positions, "vocab_size": config.vocab_size}, f)


def peak_memory():
    """The process's peak resident memory in bytes (None where it cannot be read)."""
    try:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, AttributeError):
        return None


def floor_pass(w, config):
    """The dot products of one token, as sum(map(mul, row, x)): every row of every matrix,
    with a vector of the right length."""
    e = [0.01 * (i % 7) for i in range(config.n_embd)]
    inner = [0.01 * (i % 5) for i in range(config.n_inner)]
    for i in range(config.n_layer):
        L = f"h.{i}."
        for name, x in (("attn.c_attn.weight", e), ("attn.c_proj.weight", e), ("mlp.c_fc.weight", e),
                        ("mlp.c_proj.weight", inner)):
            [sum(map(mul, row, x)) for row in w[L + name]]
    [sum(map(mul, row, e)) for row in w["wte.weight"]]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a GPT-2 folder (default: random weights of GPT-2 124M's shape under /tmp)")
    p.add_argument("--repeats", type=int, default=5, help="rounds of (one token, one floor) (default 5)")
    p.add_argument("--context", type=int, default=16, help="the position of the timed tokens (default 16)")
    args = p.parse_args()
    folder = args.model or os.path.join("/tmp", "microgpt-bench-gpt2-124M")
    if not args.model and not os.path.exists(os.path.join(folder, "model.safetensors")):
        print(f"writing random GPT-2 124M-shaped weights to {folder} (once)", flush=True)
        write_random_gpt2(folder, microgpt.GPT2Config())
    config = microgpt.read_gpt2_config(folder)
    print(f"{sys.implementation.name} {sys.version.split()[0]}; math.sumprod: "
          f"{'yes' if hasattr(math, 'sumprod') else 'no'}; model {folder}", flush=True)
    started, cpu = time.perf_counter(), time.process_time()
    w = microgpt.load_gpt2(os.path.join(folder, "model.safetensors"), config)
    load, cpu = time.perf_counter() - started, time.process_time() - cpu
    n_params = microgpt.gpt2_memory(config)[0]
    peak = peak_memory()
    print(f"load: {load:.1f} s ({cpu:.1f} s of CPU time) for {n_params:,} parameters; peak memory after loading: "
          f"{microgpt.format_bytes(peak) if peak else 'unknown'}", flush=True)

    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    for pos in range(args.context):         # fill the cache up to the timed position
        microgpt.gpt2(pos % 1000, pos, keys, values, w, config)
    floor_pass(w, config)                   # a warm-up of both (PyPy's JIT compiles here)
    tokens, floors = [], []
    # CPU time (time.process_time), not wall time: on a shared machine a process may get a
    # fraction of a core, which wall time would count against it.
    for r in range(args.repeats):
        started, wall = time.process_time(), time.perf_counter()
        microgpt.gpt2(r, args.context, [k[:args.context] for k in keys], [v[:args.context] for v in values], w,
                      config)
        tokens.append(time.process_time() - started)
        wall = time.perf_counter() - wall
        started = time.process_time()
        floor_pass(w, config)
        floors.append(time.process_time() - started)
        print(f"  round {r + 1}: token {tokens[-1]:.3f} s, floor {floors[-1]:.3f} s (CPU time), "
              f"ratio {tokens[-1] / floors[-1]:.2f}; the token took {wall:.3f} s of wall time", flush=True)
    ratios = [t / f for t, f in zip(tokens, floors)]
    print(f"s/token {statistics.median(tokens):.3f} of CPU time (median of {args.repeats}); floor {statistics.median(floors):.3f} s; "
          f"ratio {statistics.median(ratios):.2f} (median of the rounds' ratios)")
    peak = peak_memory()
    print(f"peak memory: {microgpt.format_bytes(peak) if peak else 'unknown'}")


if __name__ == "__main__":
    main()
