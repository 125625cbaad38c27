"""GPT-2 (Part IV): the forward pass against Hugging Face transformers, its pieces against
their formulas, the safetensors reader against every kind of bad file, and the downloader
against a local web server.

The models here are tiny random GPT-2s that each test run writes itself, as safetensors, in
both layouts in use: the hub's (bare names) and save_pretrained's ("transformer." prefix)."""
import hashlib
import http.server
import importlib.util
import json
import math
import os
import random
import shutil
import struct
import tempfile
import threading
import unittest

from unittest import mock

from tests.support import assert_ok, assert_refused, microgpt, run_main, run_many

HAVE_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
TINY = {"n_layer": 2, "n_embd": 16, "n_head": 4, "n_positions": 24}
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "c"), ("a", "t")]


def tiny_tensors(config, rng, prefix=""):
    """name -> (shape, numbers) of a random GPT-2: Conv1D weights stored [n_in, n_out], as
    GPT-2's files store them; gains near 1 so that LayerNorm's gain matters."""
    e, v, p = config["n_embd"], config["vocab_size"], config["n_positions"]
    shapes = {"wte.weight": [v, e], "wpe.weight": [p, e], "ln_f.weight": [e], "ln_f.bias": [e]}
    for i in range(config["n_layer"]):
        for name, shape in (("ln_1.weight", [e]), ("ln_1.bias", [e]), ("attn.c_attn.weight", [e, 3 * e]),
                            ("attn.c_attn.bias", [3 * e]), ("attn.c_proj.weight", [e, e]), ("attn.c_proj.bias", [e]),
                            ("ln_2.weight", [e]), ("ln_2.bias", [e]), ("mlp.c_fc.weight", [e, 4 * e]),
                            ("mlp.c_fc.bias", [4 * e]), ("mlp.c_proj.weight", [4 * e, e]), ("mlp.c_proj.bias", [e])):
            shapes[f"h.{i}.{name}"] = shape
    out = {}
    for name, shape in shapes.items():
        mean = 1.0 if name.endswith("weight") and len(shape) == 1 else 0.0
        out[prefix + name] = (shape, [rng.gauss(mean, 0.3) for _ in range(math.prod(shape))])
    return out


def safetensors_bytes(tensors, dtype="F32"):
    """A safetensors file, written from its specification: 8-byte little-endian header
    length, JSON header, little-endian data. tensors: name -> (shape, numbers)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (shape, values) in tensors.items():
        if dtype == "F32":
            blob = struct.pack(f"<{len(values)}f", *values)
        elif dtype == "F16":
            blob = struct.pack(f"<{len(values)}e", *values)
        else:     # BF16: the top two bytes of each float32
            blob = b"".join(struct.pack("<f", x)[2:] for x in values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode("utf-8")
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write_tokenizer(folder):
    """A tiny GPT-2 tokenizer: the 256 bytes and a few merges, then <|endoftext|>."""
    vocab = {ch: b for b, ch in enumerate(microgpt.bytes_to_unicode())}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    return len(vocab)


def write_model(folder, prefix="", seed=0, dtype="F32", config_changes=None, tensors_changes=None, data=None):
    """A tiny GPT-2 folder; returns its config (a dict). tensors_changes(tensors) may edit the
    tensors before they are written; data replaces the safetensors bytes altogether."""
    os.makedirs(folder, exist_ok=True)
    config = dict(TINY, model_type="gpt2", vocab_size=write_tokenizer(folder), layer_norm_epsilon=1e-5,
                  activation_function="gelu_new", architectures=["GPT2LMHeadModel"])
    config.update(config_changes or {})
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    tensors = random_tensors(config["vocab_size"], seed, prefix)
    if tensors_changes:
        tensors_changes(tensors)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(data if data is not None else safetensors_bytes(tensors, dtype))
    return config


_drawn = {}     # (vocab_size, seed, prefix) -> tiny_tensors: the random draws are most of a model's cost


def random_tensors(vocab_size, seed, prefix):
    """tiny_tensors of TINY with vocab_size, drawn once per process; a copy that a test may change."""
    key = (vocab_size, seed, prefix)
    if key not in _drawn:
        _drawn[key] = tiny_tensors(dict(TINY, vocab_size=vocab_size), random.Random(seed), prefix)
    return {name: (list(shape), list(values)) for name, (shape, values) in _drawn[key].items()}


def our_logits(folder, ids):
    """Our GPT-2's logits at every position of ids: [len(ids)][vocab_size]."""
    config = microgpt.read_gpt2_config(folder)
    w = microgpt.load_gpt2(os.path.join(folder, "model.safetensors"), config)
    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    return [microgpt.gpt2(t, pos, keys, values, w, config) for pos, t in enumerate(ids)], w, config


class Fixture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.tmp = cls._tmp.name
        cls.bare, cls.prefixed = os.path.join(cls.tmp, "bare"), os.path.join(cls.tmp, "prefixed")
        write_model(cls.bare)
        write_model(cls.prefixed, prefix="transformer.", seed=1)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()


class TestPieces(unittest.TestCase):
    def test_layer_norm_centres_and_scales_then_applies_gain_and_bias(self):
        x, g, b = [1.0, -2.0, 0.5, 4.0], [1.0, 2.0, 0.5, -1.0], [0.1, 0.0, -0.3, 0.2]
        mean = sum(x) / 4
        var = sum((xi - mean) ** 2 for xi in x) / 4            # the population variance, as GPT-2
        expected = [(xi - mean) / math.sqrt(var + 1e-5) * gi + bi for xi, gi, bi in zip(x, g, b)]
        for got, want in zip(microgpt.layer_norm(x, g, b, 1e-5), expected):
            self.assertAlmostEqual(got, want, places=12)

    def test_gelu_is_within_a_thousandth_of_the_exact_gelu(self):
        # The exact GELU is x * P(N(0, 1) < x) = x * (1 + erf(x / sqrt 2)) / 2; GPT-2's tanh form
        # approximates it (to about 5e-4 at worst).
        xs = [i / 10 for i in range(-60, 61)]
        for x, got in zip(xs, microgpt.gelu(xs)):
            self.assertAlmostEqual(got, x * (1 + math.erf(x / math.sqrt(2))) / 2, delta=1e-3)
        self.assertEqual(microgpt.gelu([0.0]), [0.0])

    def test_f16_and_bf16_are_read_exactly_as_float32(self):
        values = [1.5, -2.0, 0.15625, 0.0, -0.001953125, 3072.0]       # exact in both formats
        with tempfile.TemporaryDirectory() as tmp:
            for dtype in ("F16", "BF16", "F32"):
                path = os.path.join(tmp, dtype)
                with open(path, "wb") as f:
                    f.write(safetensors_bytes({"x": ([2, 3], values)}, dtype))
                dtype_found, shape, begin, _ = microgpt.read_safetensors_header(path)["x"]
                with open(path, "rb") as f:
                    f.seek(begin)
                    self.assertEqual(list(microgpt.read_floats(f, dtype_found, 6)), values, dtype)
                self.assertEqual(shape, [2, 3])


@unittest.skipUnless(HAVE_TORCH, "needs torch and transformers (the reference GPT-2): pip install torch transformers")
class TestAgainstTransformers(Fixture):
    """The reference: Hugging Face's GPT2LMHeadModel, loading the very same files."""

    models = {}

    def reference(self, folder):
        if folder not in self.models:        # loaded once per folder
            import transformers
            self.models[folder] = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
        return self.models[folder]

    def test_logits_match_transformers_to_1e_4_in_both_layouts(self):
        import torch
        ids = [5, 17, 250, 3, 99, 42, 260, 0]
        for folder in (self.bare, self.prefixed):
            with self.subTest(folder=os.path.basename(folder)):
                ours, _, _ = our_logits(folder, ids)
                with torch.no_grad():
                    theirs = self.reference(folder)(torch.tensor([ids])).logits[0].tolist()
                worst = max(abs(a - b) for row, ref in zip(ours, theirs) for a, b in zip(row, ref))
                self.assertLess(worst, 1e-4)

    def test_greedy_continuations_match_transformers_token_for_token(self):
        import torch
        prompt = [72, 101, 108, 108, 111]
        for folder in (self.bare, self.prefixed):
            with self.subTest(folder=os.path.basename(folder)):
                _, w, config = our_logits(folder, [0])
                ours = list(microgpt.generate(prompt, 15, w, config, 0, None, random.Random(0)))
                with torch.no_grad():
                    out = self.reference(folder).generate(torch.tensor([prompt]), max_new_tokens=15, do_sample=False,
                                                          pad_token_id=0)
                self.assertEqual(ours, out[0][len(prompt):].tolist())

    def test_the_command_line_writes_what_transformers_writes(self):
        import torch
        result = run_main(["--gpt2", self.bare, "--prompt", "the cat", "--length", "12", "--temperature", "0", "--ids"],
                          self.tmp)
        assert_ok(self, result)
        prompt = microgpt.read_gpt2_tokenizer(self.bare).encode("the cat")
        with torch.no_grad():
            out = self.reference(self.bare).generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                                     pad_token_id=0)
        self.assertEqual(result.stdout.split(), [str(t) for t in out[0][len(prompt):].tolist()])


class TestModel(Fixture):
    def test_attention_at_a_position_ignores_later_tokens(self):
        # The logits at position 2 are the same whatever comes after it.
        a, _, _ = our_logits(self.bare, [7, 8, 9, 10, 11])
        b, _, _ = our_logits(self.bare, [7, 8, 9, 200, 3])
        self.assertEqual(a[2], b[2])

    def test_the_two_layouts_of_the_same_weights_give_the_same_logits(self):
        with tempfile.TemporaryDirectory() as tmp:
            write_model(os.path.join(tmp, "a"), seed=3)
            write_model(os.path.join(tmp, "b"), prefix="transformer.", seed=3,
                        tensors_changes=lambda t: t.update({"lm_head.weight": t["transformer.wte.weight"]}))
            self.assertEqual(our_logits(os.path.join(tmp, "a"), [1, 2, 3])[0],
                             our_logits(os.path.join(tmp, "b"), [1, 2, 3])[0])

    def test_hub_masks_are_ignored_and_f16_weights_load(self):
        with tempfile.TemporaryDirectory() as tmp:
            mask = ([1, 1, 24, 24], [float(j <= i) for i in range(24) for j in range(24)])
            write_model(tmp, dtype="F16", tensors_changes=lambda t: t.update({"h.0.attn.bias": mask,
                                                                              "h.0.attn.masked_bias": ([], [-1e4])}))
            logits, _, _ = our_logits(tmp, [1, 2])
            self.assertTrue(all(math.isfinite(x) for x in logits[1]))

    def test_sampling_with_a_seed_is_reproducible_and_top_k_1_is_greedy(self):
        _, w, config = our_logits(self.bare, [0])
        def write(temperature, top_k, seed):
            return list(microgpt.generate([1, 2, 3], 8, w, config, temperature, top_k, random.Random(seed)))
        self.assertEqual(write(1.5, None, 7), write(1.5, None, 7))
        self.assertNotEqual(write(1.5, None, 7), write(1.5, None, 8))     # 263**8 ways: a clash would be a bug
        self.assertEqual(write(1.0, 1, 7), write(0, None, 7))
        top3 = write(5.0, 3, 7)                  # hot enough to draw far down, but only among the top 3
        keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
        for pos, token in enumerate([1, 2, 3] + top3[:-1]):
            logits = microgpt.gpt2(token, pos, keys, values, w, config)
            if pos >= 2:
                self.assertIn(top3[pos - 2], sorted(range(len(logits)), key=logits.__getitem__)[-3:])

    def test_text_output_never_splits_a_character_and_explain_and_report_work(self):
        report = os.path.join(self.tmp, "gpt2.html")
        # The random model writes arbitrary bytes, so some seed writes a character split over
        # two tokens; printed in halves, each half would be a U+FFFD of its own.
        # (seed 2 does; more seeds, 12 in all, with MICROGPT_SLOW=1 as CI sets it)
        tok, split = microgpt.read_gpt2_tokenizer(self.bare), 0
        for seed in range(1, 13 if os.environ.get("MICROGPT_SLOW") else 5):
            args = ["--gpt2", self.bare, "--prompt", "é", "--length", "22", "--temperature", "3", "--seed", seed]
            text, ids = run_many([args, args + ["--ids"]], self.tmp)
            assert_ok(self, text)
            tokens = [int(t) for t in ids.stdout.split()]
            whole = tok.decode_bytes(tokens).decode("utf-8", errors="replace")
            # what is not printable (but newlines and tabs) is shown as its escape, \r included
            as_read = "".join(ch if ch.isprintable() or ch in "\n\t" else repr(ch)[1:-1] for ch in whole)
            self.assertEqual(text.stdout, "é" + as_read + "\n")
            split += whole != "".join(tok.decode_bytes([t]).decode("utf-8", errors="replace") for t in tokens)
        self.assertGreater(split, 0, "no seed wrote a split character: the test proves nothing")
        explained = run_main(["--gpt2", self.bare, "--explain", "the cat", "--report", report], self.tmp)
        assert_ok(self, explained)
        tokens = microgpt.read_gpt2_tokenizer(self.bare).encode("the cat")      # 't', 'he', ' c', 'at'
        self.assertEqual(len(explained.stdout.splitlines()), 1 + len(tokens))  # a header, then a line each
        self.assertIn("'he'", explained.stdout)
        with open(report, encoding="utf-8") as f:
            page = f.read()
        self.assertEqual(page.count("<svg"), 1 + TINY["n_layer"] * TINY["n_head"])  # a legend, a map per head
        self.assertEqual(page.count("<tr>"), 1 + len(tokens))                      # a row per position


class TestBadWeights(unittest.TestCase):
    def test_bad_weights_and_configs_are_refused_with_one_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            good = safetensors_bytes(tiny_tensors(dict(TINY, vocab_size=263), random.Random(0)))
            n = struct.unpack("<Q", good[:8])[0]
            header = json.loads(good[8:8 + n])

            def with_header(change):
                h = json.loads(json.dumps(header))
                change(h)
                text = json.dumps(h).encode()
                return struct.pack("<Q", len(text)) + text + good[8 + n:]

            def nan(t):
                t["h.1.mlp.c_fc.bias"][1][3] = float("nan")

            def overlap(h):
                h["wpe.weight"]["data_offsets"] = h["wte.weight"]["data_offsets"][:]
                h["wpe.weight"]["shape"] = h["wte.weight"]["shape"]

            cases = {     # through the command line (main() in this process): the kinds of damage a file can have
                "truncated": dict(data=good[:len(good) - 100]),
                "header_too_long": dict(data=struct.pack("<Q", len(good)) + good[8:]),
                "overlap": dict(data=with_header(overlap)),
                "unknown_dtype": dict(data=with_header(lambda h: h["ln_f.bias"].update(dtype="F8"))),
                "wrong_shape": dict(tensors_changes=lambda t: t.update({"ln_f.bias": ([17], [0.0] * 17)})),
                "missing": dict(tensors_changes=lambda t: t.pop("h.1.ln_2.weight")),
                "nan": dict(tensors_changes=nan),
            }
            for name, change in cases.items():
                write_model(os.path.join(tmp, name), **change)
            pickle = os.path.join(tmp, "pickle")
            write_model(pickle)
            os.rename(os.path.join(pickle, "model.safetensors"), os.path.join(pickle, "pytorch_model.bin"))
            folders = list(cases) + ["pickle"]
            results = assert_refused(self, tmp, *[["--gpt2", os.path.join(tmp, f), "--prompt", "the", "--length", "3"]
                                                  for f in folders])
            said = dict(zip(folders, (r.stderr for r in results)))
            self.assertIn("pytorch_model.bin", said["pickle"])
            self.assertIn("NaN", said["nan"])
            self.assertIn("overlap", said["overlap"])
            self.assertIn("h.1.ln_2.weight", said["missing"])
            self.assertIn("'F8'", said["unknown_dtype"])

            more = {      # the same checks, called directly (a process each would slow the suite)
                "tiny": dict(data=b"\x01\x02"),
                "not_json": dict(data=struct.pack("<Q", 4) + b"{{{{" + good[8 + n:]),
                "length_mismatch": dict(data=with_header(lambda h: h["ln_f.bias"].update(shape=[15]))),
                "negative_offset": dict(data=with_header(lambda h: h["ln_f.bias"].update(data_offsets=[-64, 0]))),
                "inf": dict(tensors_changes=lambda t: t["wte.weight"][1].__setitem__(5, float("-inf"))),
                "activation": dict(config_changes={"activation_function": "relu"}),
                "model_type": dict(config_changes={"model_type": "llama"}),
                "head": dict(config_changes={"n_head": 5}),
                "epsilon": dict(config_changes={"layer_norm_epsilon": "small"}),
            }
            for name, change in more.items():
                with self.subTest(case=name):
                    folder = os.path.join(tmp, name)
                    write_model(folder, **change)
                    with self.assertRaises(microgpt.BadInput):
                        microgpt.load_gpt2(os.path.join(folder, "model.safetensors"), microgpt.read_gpt2_config(folder))

    def test_impossible_requests_are_refused_with_one_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            folder = os.path.join(tmp, "m")
            write_model(folder)
            huge = os.path.join(tmp, "huge")       # a config.json of 50 trillion parameters
            write_model(huge, config_changes={"n_layer": 1000, "n_embd": 65536})
            other = os.path.join(tmp, "other")     # a model of 300 tokens with a tokenizer of 263
            write_model(other, config_changes={"vocab_size": 300})
            results = assert_refused(self, tmp, ["--gpt2", folder, "--prompt", "the", "--length", "30"],
                                     ["--gpt2", folder, "--prompt", "the", "--temperature", "-1", "--top-k", "0"],
                                     ["--gpt2", folder, "--steps", "5"], ["--gpt2", "no-such-model"], ["--ids"],
                                     ["--gpt2", folder, "--report", os.path.join(tmp, "r.html")],
                                     ["--gpt2", other, "--prompt", "the"], ["--gpt2", huge, "--prompt", "the"])
            self.assertIn("context of 24 tokens", results[0].stderr)
            self.assertIn("51,540,", results[-1].stderr)                      # its parameters, counted


class Hub(http.server.ThreadingHTTPServer):
    """A stand-in for the Hugging Face hub on 127.0.0.1: /REPO/resolve/main/FILE, and for
    model.safetensors a redirect that states the file's size and sha256 as the hub does
    (X-Linked-Size, X-Linked-Etag), to /blobs/ where the bytes are. It honours Range, and
    can cut a response short (cut_after) or serve wrong bytes (corrupt)."""

    def __init__(self, files):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.files, self.cut_after, self.corrupt, self.ranges = files, None, False, []


class HubHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        data = self.server.files.get(name)
        if data is None:
            return self.send_error(404)
        if "/resolve/" in self.path and name == "model.safetensors":
            self.send_response(302)
            self.send_header("Location", f"/blobs/{name}")
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", "0")
            return self.end_headers()
        big = name == "model.safetensors"
        if self.server.corrupt and big:
            data = data[:-1] + bytes([data[-1] ^ 1])
        start = 0
        if self.headers.get("Range"):
            self.server.ranges.append(self.headers["Range"])
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.cut_after is not None and big:
            body = body[:self.server.cut_after]
            self.close_connection = True
        self.wfile.write(body)


class TestDownload(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        source = os.path.join(cls._tmp.name, "source")
        write_model(source)
        files = {}
        for name in ("config.json", "vocab.json", "merges.txt", "model.safetensors"):
            with open(os.path.join(source, name), "rb") as f:
                files[name] = f.read()
        cls.files = files

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        self.hub = Hub(self.files)
        # shutdown() waits for the server's next poll: 0.5 s by default, for each test
        threading.Thread(target=self.hub.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.addCleanup(self.hub.server_close)
        self.addCleanup(self.hub.shutdown)
        self.cache = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.cache)
        self.env = {"MICROGPT_HUB_URL": f"http://127.0.0.1:{self.hub.server_address[1]}", "XDG_CACHE_HOME": self.cache}
        self.folder = os.path.join(self.cache, "microgpt", "gpt2")

    def run_gpt2(self):
        with mock.patch.dict(os.environ, self.env):
            return run_main(["--gpt2", "gpt2", "--prompt", "the", "--length", "3", "--ids"], self.cache)

    def test_a_clean_download_lands_in_the_cache_and_is_used_offline_after(self):
        assert_ok(self, self.run_gpt2())
        for name, data in self.files.items():
            with open(os.path.join(self.folder, name), "rb") as f:
                self.assertEqual(f.read(), data, name)
        self.hub.files = {}                      # the hub is gone: the cache is enough
        again = self.run_gpt2()
        assert_ok(self, again)
        self.assertNotIn("downloading", again.stderr)

    def test_an_interrupted_download_is_resumed_where_it_stopped(self):
        self.hub.cut_after = len(self.files["model.safetensors"]) // 2
        first = self.run_gpt2()
        self.assertEqual(first.returncode, 2, first.stderr)
        self.assertIn("run the same command again to resume", first.stderr.splitlines()[-1])
        self.assertNotIn("Traceback", first.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.folder, "model.safetensors")))
        self.hub.cut_after = None
        assert_ok(self, self.run_gpt2())
        self.assertEqual(self.hub.ranges, [f"bytes={len(self.files['model.safetensors']) // 2}-"])
        with open(os.path.join(self.folder, "model.safetensors"), "rb") as f:
            self.assertEqual(f.read(), self.files["model.safetensors"])

    def test_tokenize_by_name_downloads_the_tokenizer_alone(self):
        text = os.path.join(self.cache, "text.txt")
        with open(text, "w", encoding="utf-8") as f:
            f.write("the cat")
        with mock.patch.dict(os.environ, self.env):
            result = run_main(["--gpt2", "gpt2", "--tokenize", text], self.cache)
        assert_ok(self, result)
        self.assertEqual(sorted(os.listdir(self.folder)), ["merges.txt", "vocab.json"])
        self.assertIn("downloading gpt2 (its tokenizer, under 2 MB) from", result.stderr)
        tok = microgpt.read_gpt2_tokenizer(self.folder)
        self.assertEqual(result.stdout.split(), [str(i) for i in tok.encode("the cat")])

    def test_a_corrupted_download_is_refused_and_not_kept(self):
        self.hub.corrupt = True
        result = self.run_gpt2()
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("sha256", result.stderr.splitlines()[-1])
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(sorted(os.listdir(self.folder)), ["config.json", "merges.txt", "vocab.json"])


if __name__ == "__main__":
    unittest.main()
