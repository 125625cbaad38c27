"""--report FILE.html: one self-contained page of pictures of the run and the model.

The command line is run for real on tiny models (a few hundred parameters, a few steps);
the page is then taken apart: its SVG pictures must parse as XML, it must refer to nothing
outside itself, and the numbers in its JSON block must agree with what the run printed and
with the model's own functions.
"""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

from support import (scratch_directory, set_class_fixture, MICROGPT_COMMAND, NAMES, TempDirTestCase, assert_ok, assert_refused, in_background, run_main,
                     run_many, write_text)  # noqa: E402

import microgpt

import html.parser
import itertools
import json
import math
import random
import re
import shlex
import subprocess
import tempfile
import unittest
from concurrent.futures import ThreadPoolExecutor
import xml.etree.ElementTree as ET

TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8"]
BITS = "111101111011110" * 3
TIMING_MARKERS = ("ms/step", "s left", " in ")
DATA_BLOCK = re.compile(r'<script type="application/json" id="microgpt-data">(.*?)</script>', re.S)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def page_data(page):
    """The JSON block of a page."""
    [blob] = DATA_BLOCK.findall(page)
    return json.loads(blob)


def svgs(page):
    return re.findall(r"<svg\b.*?</svg>", page, re.S)


class PageParts(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text of <style> and <script> elements."""

    def __init__(self):
        super().__init__()
        self.tags, self.styles, self.scripts, self._in = [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("style", "script") else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "style":
            self.styles.append(data)
        elif self._in == "script":
            self.scripts.append(data)


def parts(page):
    parser = PageParts()
    parser.feed(page)
    parser.close()
    return parser


def report_page_runs():
    """ReportPageTest's runs, in new processes, in the background (support.in_background)."""
    fixture = {"_tmp": scratch_directory()}
    tmp = fixture["tmp"] = fixture["_tmp"].name
    names = write_text(tmp, "names.txt", "\n".join(NAMES) + "\n")
    bits = write_text(tmp, "bits.txt", BITS)
    keys = ("docs", "stream", "loaded", "remembered", "garbled", "closed", "cut", "saved")
    paths = fixture["paths"] = {key: os.path.join(tmp, f"{key}.html") for key in keys}
    ckpt = fixture["ckpt"] = os.path.join(tmp, "docs.json")
    dot = fixture["dot"] = os.path.join(tmp, "chain.dot")
    results = fixture["results"] = dict(zip(("docs", "stream"), run_many([
        ["--input", names, "--steps", "30", "--num-samples", "4", "--report", paths["docs"], "--save", ckpt] + TINY,
        ["--input", bits, "--stream", "--block-size", "3", "--n-layer", "2", "--n-embd", "8", "--n-head", "2",
         "--steps", "4", "--batch", "all", "--num-samples", "0", "--report", paths["stream"], "--chain", dot],
    ], tmp, real=True)))
    # The saved model, loaded: as it is, and with a training history added to its
    # checkpoint (the shape --save keeps it in), well-formed or not.
    with open(ckpt, encoding="utf-8") as f:
        checkpoint = json.load(f)
    data = page_data(read(paths["docs"]))
    history = fixture["history"] = {"losses": data["losses"], "val_points": data["val_points"],
                                    "snapshots": data["samples_during_training"]}
    checkpoint.pop("history", None)          # a checkpoint that keeps no history, as older ones
    forgetful = dict(checkpoint, training=dict(checkpoint["training"], steps=1))    # and says 1 step
    ckpts = fixture["ckpts"] = {key: os.path.join(tmp, f"{key}.json") for key in ("forgetful", "remembered", "garbled")}
    for key, kept in (("forgetful", None), ("remembered", history), ("garbled", dict(history, losses=["x", None]))):
        with open(ckpts[key], "w", encoding="utf-8") as f:
            json.dump(dict(checkpoint, history=kept) if kept else forgetful, f)
    # The same training as "docs", with the page written while stdout is closed, or cut
    # short by a reader that goes away after one line (a shell does the redirecting).
    docs = " ".join(shlex.quote(a) for a in MICROGPT_COMMAND + ["--input", names, "--steps", "30",
                                                                "--num-samples", "4"] + TINY)
    shell = fixture["shell"] = {"closed": f"{docs} --report {shlex.quote(paths['closed'])} >&-",
                                "cut": f"{docs} --report {shlex.quote(paths['cut'])} | head -1"}
    loads = [("loaded", ckpts["forgetful"]), ("remembered", ckpts["remembered"]), ("garbled", ckpts["garbled"]),
             ("saved", ckpt)]
    for (key, _), result in zip(loads, run_many([["--load", path, "--num-samples", "3", "--report", paths[key]]
                                                 for key, path in loads], tmp, real=True)):
        results[key] = result
    if os.name == "posix":
        for key, command in shell.items():
            results[key] = subprocess.run(command, shell=True, cwd=tmp, capture_output=True, text=True, timeout=120)
    fixture["pages"] = {key: read(path) for key, path in paths.items() if os.path.exists(path)}
    return fixture


REPORT_PAGES = in_background(report_page_runs)


class ReportPageTest(unittest.TestCase):
    """One model of documents and one of continuous text, trained once for all the tests of
    this class, each writing a report and a checkpoint; then the saved model loaded and
    reported on without training."""

    @classmethod
    def setUpClass(cls):
        set_class_fixture(cls, REPORT_PAGES)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def page(self, key):
        assert_ok(self, self.results[key])
        self.assertIn(f"wrote {self.paths[key]}", self.results[key].stdout)
        return self.pages[key]

    def test_a_loaded_model_whose_checkpoint_keeps_its_history_shows_its_loss_curve_and_samples_while_learning(self):
        page, data = self.page("remembered"), page_data(self.page("remembered"))
        self.assertEqual(data["losses"], self.history["losses"])
        self.assertEqual(data["val_points"], self.history["val_points"])
        self.assertIn("Loss while training", page)
        self.assertIn("What the model writes as it learns", page)
        for snapshot in self.history["snapshots"]:
            self.assertIn(microgpt.escape(", ".join(snapshot["samples"])), page)
        self.assertIn("as the checkpoint remembers them", page)
        # a history in a shape we do not know is never drawn: either the checkpoint is refused
        # (one line on stderr, exit 2) or its page says there is no loss curve
        garbled = self.results["garbled"]
        if garbled.returncode == 2:
            self.assertRegex(garbled.stderr, r"^microgpt: error: .*history")
        else:
            self.assertIn("no loss curve", self.page("garbled"))
            self.assertEqual(page_data(self.page("garbled"))["losses"], [])

    def test_a_loaded_model_with_only_validation_points_states_the_last_one_as_the_charts(self):
        # an older checkpoint: its history keeps the chart's points, not the final validation loss
        step, loss = self.history["val_points"][-1]
        run_table = self.page("remembered").split("<h2>The run</h2>")[1].split("</table>")[0]
        self.assertNotIn("no validation loss", run_table)
        self.assertIn(f"validation not kept by the checkpoint: {loss:.4f} at step {step:,} (the chart&#39;s last "
                      "point)", run_table)
        self.assertIn("no validation loss", self.page("loaded"))        # a checkpoint without a history

    def test_a_loaded_models_page_gives_the_validation_loss_its_training_run_printed(self):
        printed = re.search(r"^validation loss: ([\d.]+) \(mean per token over ([\d,]+) held-out documents\)$",
                            self.results["docs"].stdout, re.M)
        self.assertIsNotNone(printed, self.results["docs"].stdout)
        loss, count = printed.groups()
        for key, how in (("docs", ";"), ("saved", " (as the run that saved the model printed it);")):
            with self.subTest(page=key):
                page = self.page(key)
                run_table = page.split("<h2>The run</h2>")[1].split("</table>")[0]
                self.assertIn(f"validation {loss} on {count} held-out documents{how}", run_table)
                caption = page.split("<h2>The loss curve</h2>")[1].split("</figcaption>")[0]
                self.assertIn(f"At the end the validation loss on all {count} held-out documents is {loss}, as the run "
                              "printed", caption)
                # the chart's points are on a subset, and the caption and legend say so
                subset = re.search(r"validation loss on the same ([\d,]+) held-out documents each time", page)
                self.assertIsNotNone(subset)
                self.assertIn(f"On the same {subset.group(1)} held-out documents each time (orange)", caption)
                self.assertAlmostEqual(page_data(page)["val_loss"], float(loss), delta=5e-5)

    @unittest.skipUnless(os.name == "posix", "uses a POSIX shell to close stdout and to pipe into head")
    def test_the_page_is_the_same_whether_stdout_is_read_closed_or_cut_short(self):
        # Only the run's time differs: it is in the "training" row of the page.
        def without_time(page):
            return re.sub(r" in \d+\.\d s", "", page).replace(self.paths["docs"], "")
        want = page_data(self.page("docs"))
        self.assertIsNotNone(want["val_loss"])
        for key in ("closed", "cut"):
            with self.subTest(stdout=self.shell[key]):
                self.assertEqual(self.results[key].returncode, 0, self.results[key].stderr)
                self.assertEqual(page_data(self.pages[key]), want)
                self.assertEqual(without_time(self.pages[key]), without_time(self.pages["docs"]))

    def test_graphviz_file_keeps_the_pages_arrows_as_wide_as_their_probability(self):
        # The printed table gives every move's probability (to 0.1%); the .dot file must have an
        # arrow for each move of at least CHAIN_MIN_PROBABILITY, and no other, 0.5 + 5p wide.
        result = self.results["stream"]
        moves = {}
        for state, rest in re.findall(r"(?m)^([01]{3})  (.*)$", result.stdout):
            for token, p, target in re.findall(r"([01]): +(\d+\.\d)% -> ([01]{3})", rest):
                moves[state, token] = (float(p) / 100, target)
        self.assertEqual(len(moves), 16)
        with open(self.dot, encoding="utf-8") as f:
            dot = f.read()
        self.assertIn(f"less likely than {microgpt.CHAIN_MIN_PROBABILITY:.0%} are left out", dot)
        arrows = re.findall(r'"([01]{3})" -> "([01]{3})" \[label="([01]) \(\d+%\)", penwidth=([\d.]+)\]', dot)
        kept = {key: value for key, value in moves.items() if value[0] >= microgpt.CHAIN_MIN_PROBABILITY + 0.001}
        self.assertLessEqual(len(kept), len(arrows))
        self.assertLessEqual(len(arrows), len([v for v in moves.values() if v[0] >= 0.009]))
        for state, target, token, width in arrows:
            p, goes_to = moves[state, token]
            self.assertEqual(goes_to, target)
            self.assertAlmostEqual(float(width), 0.5 + 5 * p, delta=0.01)

    def test_every_svg_picture_parses_as_xml(self):
        for key in ("docs", "stream", "loaded"):
            pictures = svgs(self.page(key))
            self.assertGreaterEqual(len(pictures), 4, key)
            for picture in pictures:
                with self.subTest(page=key, svg=picture[:80]):
                    root = ET.fromstring(picture)
                    self.assertEqual(root.tag, "svg")

    def test_the_page_refers_to_nothing_outside_itself_and_needs_no_javascript(self):
        for key in ("docs", "stream", "loaded"):
            page = self.page(key)
            found = parts(page)
            with self.subTest(page=key):
                self.assertIn('<meta name="generator" content="microgpt">', page)
                self.assertNotRegex(page, r"(?i)https?:|//[a-z0-9.-]+\.[a-z]{2,}/|file:")
                ids = {attrs["id"] for _, attrs in found.tags if "id" in attrs}
                for tag, attrs in found.tags:
                    if tag == "a":           # the presentation view's links: to places in the page only
                        self.assertIn(attrs.get("href", "")[1:], ids, attrs)
                        self.assertTrue(attrs["href"].startswith("#"), attrs)
                        attrs = {k: v for k, v in attrs.items() if k != "href"}
                    self.assertNotIn(tag, ("link", "img", "iframe", "object", "embed", "audio", "video", "source",
                                           "base", "image", "use", "foreignobject"), tag)
                    for name in ("src", "srcset", "href", "xlink:href", "action", "data", "poster"):
                        self.assertNotIn(name, attrs, (tag, attrs))
                    for value in attrs.values():
                        for url in re.findall(r"url\(([^)]*)\)", value or ""):
                            self.assertTrue(url.startswith("#"), (tag, attrs))
                    if tag == "script":        # data only: nothing runs
                        self.assertEqual(attrs.get("type"), "application/json", attrs)
                style = "".join(found.styles)
                self.assertTrue(style)
                self.assertNotIn("@import", style)
                self.assertNotIn("url(", style)
                self.assertNotIn("@font-face", style)

    def test_embedded_losses_are_every_step_and_their_last_100_average_to_the_printed_smoothed_loss(self):
        result, data = self.results["docs"], page_data(self.page("docs"))
        self.assertEqual(len(data["losses"]), 30)
        printed = float(re.search(r"smoothed loss (\d+\.\d+)", result.stdout).group(1))
        tail = data["losses"][-100:]
        self.assertAlmostEqual(sum(tail) / len(tail), printed, delta=5e-5)
        # the first step's loss is printed too
        first = float(re.search(r"step +1/30 \| loss (\d+\.\d+)", result.stdout).group(1))
        self.assertAlmostEqual(data["losses"][0], first, delta=5e-5)
        val = float(re.search(r"validation loss: (\d+\.\d+)", result.stdout).group(1))
        self.assertAlmostEqual(data["val_loss"], val, delta=5e-5)

    def test_the_data_block_has_the_model_shape_and_vocabulary(self):
        data = page_data(self.page("docs"))
        self.assertEqual(data["config"], {"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 8})
        self.assertEqual(data["chars"], sorted(set("".join(NAMES))))
        self.assertEqual(data["mode"], "docs")

    def test_validation_points_and_training_samples_span_the_run(self):
        data = page_data(self.page("docs"))
        steps = [step for step, _ in data["val_points"]]
        self.assertEqual(steps, sorted(set(steps)))
        self.assertEqual((steps[0], steps[-1]), (0, 30))
        self.assertEqual(steps, [0, 1, 2, 5, 6, 10, 12, 18, 20, 24, 30])    # 1, 2, 5, 10, 20 and each fifth
        self.assertTrue(all(math.isfinite(loss) and loss > 0 for _, loss in data["val_points"]))
        snapshots = data["samples_during_training"]
        self.assertEqual((snapshots[0]["step"], snapshots[-1]["step"]), (0, 30))
        self.assertGreaterEqual(len(snapshots), 3)
        # drawn with the final samples' seed, so the last snapshot begins like the final samples
        self.assertEqual(snapshots[-1]["samples"][:4], data["samples"][:4])

    def test_embedded_probabilities_equal_the_models_softmax(self):
        data = page_data(self.page("docs"))
        config, chars, params, _, _ = microgpt.load_checkpoint(self.ckpt)
        weights = microgpt.weights_of(params)
        self.assertTrue(data["examples"])
        for example in data["examples"]:
            logits = microgpt.logits_at_every_position(example["tokens"], weights, config)
            self.assertEqual(len(example["probs"]), len(example["tokens"]))
            for probs, row in zip(example["probs"], logits):
                self.assertEqual(len(probs), len(chars) + 1)            # every character and BOS
                for p, q in zip(probs, microgpt.softmax(row)):
                    self.assertAlmostEqual(p, q, places=12)
            # the text its table covers: the tokens read, and the last one predicted (none after BOS)
            self.assertEqual(example["text"], microgpt.decode(example["tokens"] + example["targets"][-1:], chars))

    def test_each_attention_row_covers_only_earlier_positions_and_sums_to_1(self):
        for key, n_layer in (("docs", 1), ("stream", 2)):
            data = page_data(self.page(key))
            for example in data["examples"]:
                attention = example["attention"]                          # [layer][head][position][earlier]
                self.assertEqual(len(attention), n_layer)
                for layer in attention:
                    self.assertEqual(len(layer), 2)
                    for head in layer:
                        self.assertEqual(len(head), len(example["tokens"]))
                        for pos, row in enumerate(head):
                            self.assertEqual(len(row), pos + 1)           # positions 0..pos: itself and earlier
                            self.assertTrue(all(w >= 0 for w in row))
                            self.assertAlmostEqual(sum(row), 1.0, places=9)

    def test_samples_in_the_page_are_the_printed_samples_with_a_probability_per_character(self):
        for key in ("docs", "loaded"):
            result, data = self.results[key], page_data(self.page(key))
            printed = re.findall(r"(?m)^sample +\d+: (.*)$", result.stdout)
            self.assertEqual(data["samples"], printed)
            for text, probs in zip(data["samples"], data["sample_probs"]):
                self.assertEqual(len(probs), len(text))
                self.assertTrue(all(0 < p <= 1 for p in probs), probs)

    def test_stream_page_shows_windows_and_the_markov_chain_as_a_graph(self):
        page, data = self.page("stream"), page_data(self.page("stream"))
        self.assertEqual(data["mode"], "stream")
        self.assertIsNone(data["bos"])
        self.assertIn("Inside one window", page)
        for example in data["examples"]:
            self.assertLessEqual(len(example["tokens"]), 3)
            self.assertEqual(example["targets"][:-1], example["tokens"][1:])
            self.assertEqual(len(example["probs"][0]), 2)                 # no BOS in a stream
            # the table's title names its last row's true next token too (a stream's window has no BOS)
            covered = microgpt.decode(example["tokens"] + example["targets"][-1:], data["chars"])
            self.assertEqual(len(example["text"]), len(example["tokens"]) + 1)
            self.assertIn(f"Predictions for {covered}<", page)
        # 2 tokens, context of 3: 8 states, each a circle labelled with its context
        [chain] = [s for s in svgs(page) if "Markov chain" in s]
        root = ET.fromstring(chain)
        labels = {t.text for t in root.iter("text")}
        self.assertEqual(len(list(root.iter("circle"))), 8)
        self.assertLessEqual({"000", "011", "111"}, labels)
        self.assertTrue([t for t in labels if re.fullmatch(r"\d+(\.\d+)?%", t or "")], labels)
        # each arrow says which token it reads and how likely it is; none under the threshold
        arrows = [p.find("title").text for p in root.iter("path") if p.find("title") is not None]
        self.assertTrue(arrows)
        for arrow in arrows:
            token, p = re.fullmatch(r"([01]): (\d+(?:\.\d+)?)%", arrow).groups()
            self.assertGreaterEqual(float(p), 100 * microgpt.CHAIN_MIN_PROBABILITY - 0.01)
        # the stream sample: no probability for the first character, which is given
        [probs] = data["sample_probs"]
        self.assertIsNone(probs[0])
        self.assertEqual(len(probs), len(data["samples"][0]))

    def test_a_loaded_model_without_training_gets_a_page_that_says_there_is_no_loss_curve(self):
        page, data = self.page("loaded"), page_data(self.page("loaded"))
        self.assertNotIn("step ", self.results["loaded"].stdout)
        self.assertIn("no loss curve", page)
        self.assertEqual(data["losses"], [])
        self.assertIsNone(data["val_loss"])
        self.assertNotIn("Loss while training", page)
        self.assertTrue(data["examples"])                                  # inside the samples instead
        self.assertIn("none in this run (1 step before it was saved)", page)      # its checkpoint's count


class ReportUnitsTest(unittest.TestCase):

    def test_centred_means_do_not_lag_a_straight_line_and_stop_before_the_end(self):
        ramp = [3.0 - 0.01 * i for i in range(40)]
        smooth = microgpt.centred_means(ramp, 5)
        self.assertEqual(smooth[-5:], [None] * 5)                  # the steps after are missing
        for i, s in enumerate(smooth[:-5]):
            self.assertAlmostEqual(s, ramp[i], places=12)         # a trailing mean would be 0.05 above
        noisy = [random.Random(i).random() for i in range(30)]
        for i, s in enumerate(microgpt.centred_means(noisy, 4)[:-4]):
            h = min(4, i)
            self.assertAlmostEqual(s, sum(noisy[i - h:i + h + 1]) / (2 * h + 1), places=12)

    def test_long_run_shares_of_a_two_state_chain_are_the_textbook_ones(self):
        # Leaving state 0 with probability a and state 1 with probability b, the chain spends
        # b / (a + b) of its time in state 0 and a / (a + b) in state 1.
        a, b = 0.3, 0.1
        chain = [((0,), [1 - a, a]), ((1,), [b, 1 - b])]
        shares = microgpt.long_run_shares(chain)
        self.assertAlmostEqual(shares[0], b / (a + b), places=9)
        self.assertAlmostEqual(shares[1], a / (a + b), places=9)

    def test_de_bruijn_order_lists_every_state_once_each_the_last_slid_one_token_along(self):
        for vocab_size, length in ((2, 3), (2, 4), (4, 2), (3, 2), (16, 1)):
            with self.subTest(vocab_size=vocab_size, length=length):
                order = microgpt.de_bruijn_order(vocab_size, length)
                self.assertEqual(sorted(order), sorted(itertools.product(range(vocab_size), repeat=length)))
                for state, after in zip(order, order[1:] + order[:1]):
                    self.assertEqual(after[:-1], state[1:])

    def test_place_label_never_puts_a_label_on_another_or_outside_its_bounds(self):
        taken, bounds = [], (0, 0, 200, 200)
        rng = random.Random(3)
        for _ in range(60):
            x, y = rng.uniform(0, 200), rng.uniform(0, 200)
            place = microgpt.place_label("ab", 15, [(x, y, "start"), (x - 10, y + 10, "end")], taken, bounds)
            if place:
                box = microgpt.text_box(place[0], place[1], "ab", 15, place[2])
                self.assertTrue(0 <= box[0] and box[2] <= 200 and 0 <= box[1] and box[3] <= 200)
        for i, a in enumerate(taken):
            for b in taken[i + 1:]:
                self.assertFalse(microgpt.overlap(a, b, gap=0), (a, b))

    def test_top_components_find_the_directions_of_greatest_spread(self):
        # points spread mostly along (1, 1, 0), a little along (1, -1, 0), not at all along z
        rows = [[3 * t + s, 3 * t - s, 0.5] for t in (-2, -1, 0, 1, 2) for s in (-0.5, 0.5)]
        mean, ((v1, c1), (v2, c2)) = microgpt.top_components(rows)
        self.assertEqual([round(m, 12) for m in mean], [0, 0, 0.5])
        r = 1 / math.sqrt(2)
        for got, want in zip(c1, (r, r, 0)):
            self.assertAlmostEqual(got, want, places=9)
        for got, want in zip(c2, (r, -r, 0)):
            self.assertAlmostEqual(abs(got), abs(want), places=9)
        self.assertAlmostEqual(sum(a * b for a, b in zip(c1, c2)), 0, places=9)     # at right angles
        self.assertGreater(v1, v2)
        self.assertAlmostEqual(v1, 2 * 9 * 2, places=9)       # variance along c1: (3t * sqrt 2)^2 averaged
        self.assertAlmostEqual(v2, 2 * 0.25, places=9)

    def test_page_for_the_default_model_stays_under_1_mb_even_with_the_longest_names(self):
        # The default shape, 1000 steps, and everything as long as it can be: three examples
        # and 20 samples of block_size characters.
        config = microgpt.Config()
        chars = sorted("abcdefghijklmnopqrstuvwxyz")
        weights = microgpt.weights_of(microgpt.init_params(config, len(chars) + 1, random.Random(1)))
        longest = [t % len(chars) for t in range(config.block_size)]            # 16 characters, no end
        example = ([len(chars)] + longest[:-1], longest)
        run = {"config": config, "mode": "docs", "chars": chars, "weights": weights, "n_params": 4192,
               "losses": [3.3 - i * 1e-3 + 1e-7 * i * i for i in range(1000)], "val_loss": 2.3456789,
               "val_points": [(s, 2.0 + 1 / (1 + s)) for s in range(0, 1001, 100)], "val_subset": 200,
               "snapshots": [{"step": s, "samples": ["x" * 16] * 5} for s in (0, 50, 200, 500, 1000)],
               "data_name": "names.txt", "data": "names.txt: 29,910 documents", "training": "1,000 steps",
               "batch": "1 document", "interpreter": "cpython", "examples": [example] * 3,
               "samples": [microgpt.decode(longest, chars)] * 20, "sample_ids": [longest] * 20}
        page = microgpt.report_page(run)
        self.assertLess(len(page.encode("utf-8")), 1_000_000)
        self.assertEqual(len(page_data(page)["examples"]), 3)

    def synthetic_run(self, losses, num_samples=20):
        config = microgpt.Config(num_samples=num_samples)
        chars = sorted("abcdefghijklmnopqrstuvwxyz")
        weights = microgpt.weights_of(microgpt.init_params(config, len(chars) + 1, random.Random(1)))
        n = len(losses)
        return {"config": config, "mode": "docs", "chars": chars, "weights": weights, "n_params": 4192,
                "losses": losses, "val_loss": 2.5, "val_points": [(0, 3.3), (n, 2.5)], "val_subset": 200,
                "snapshots": [], "data_name": "names.txt", "data": "names.txt", "training": f"{n} steps",
                "batch": "1 document", "interpreter": "cpython", "examples": [([26, 0, 1], [0, 1, 26])],
                "samples": ["ab", "ba"], "sample_ids": [[0, 1], [1, 0]], "text": None,
                "names_data": True}     # as if of the shipped names.txt

    def test_one_spike_does_not_set_the_loss_charts_range_and_is_marked(self):
        losses = [3.3 - 0.001 * i + 0.2 * math.sin(i) for i in range(1000)]
        losses[929] = 5.1
        page = microgpt.report_page(self.synthetic_run(losses))
        charts = [s for s in svgs(page) if "loss while training" in s]
        self.assertEqual(len(charts), 2)                     # the page's and the presentation view's
        for chart in charts:
            ticks = [float(t.text) for t in ET.fromstring(chart).iter("text") if t.get("text-anchor") == "end"
                     and re.fullmatch(r"\d+(\.\d+)?", t.text)]              # the y axis's numbers
            self.assertLess(max(ticks), 4)                  # the y axis stops well below the spike
            self.assertIn('fill="#c00"', chart)              # a red triangle marks it
        self.assertIn("the highest, 5.10, at step 930", page)

    def test_the_loss_caption_compares_like_with_like_and_holds_for_a_history_not_starting_at_step_0(self):
        # a fine-tune's 200 steps whose checkpoint kept no earlier history: model steps 1,001 to 1,200
        losses = [2.4 - 0.0005 * i + 0.1 * math.sin(i) for i in range(200)]
        run = dict(self.synthetic_run(losses), first=1000, val_points=[(1000, 2.44), (1100, 2.40), (1200, 2.31)],
                   val_loss=2.3602, val_count=1000, val_subset=25)
        page = microgpt.report_page(run)
        caption = page.split("<h2>The loss curve</h2>")[1].split("</figcaption>")[0]
        self.assertIn("the loss fell from 2.44 at step 1,000 to 2.31 at step 1,200", caption)   # validation both
        first, last = sum(losses[:100]) / 100, sum(losses[-100:]) / 100                     # training both
        self.assertIn(f"the training loss from {first:.2f} (mean of the first 100 steps) to {last:.2f} "
                      "(the last 100)", caption)
        for untrue in ("logarithmic", "fast start", " 1 steps"):
            self.assertNotIn(untrue, caption)
        ticks = [t.text for chart in svgs(page) if "loss while training" in chart
                 for t in ET.fromstring(chart).iter("text") if t.get("text-anchor") == "middle"]
        self.assertIn("1,200", ticks)
        self.assertNotIn("0", ticks)                      # the axis starts where the history does
        # and a run of one step says so in the singular
        one = microgpt.report_page(dict(self.synthetic_run([3.3]), val_points=[(0, 3.3), (1, 3.2)]))
        self.assertIn("the training loss of its one step was 3.30", one)
        self.assertNotIn("(the first step) to", one)          # one step is not a first and a last
        self.assertNotIn("1 steps", one.split("<th>loss</th>")[1].split("</figcaption>")[0])
        self.assertNotIn("mean of the last 1 step", one)
        self.assertIn("training (one step) 3.3000", one)

    def test_a_short_runs_captions_say_it_is_too_short_to_tell_instead_of_concluding(self):
        # 7 steps of one name each: the training loss at the end is a mean of 3 names' losses,
        # and the position embeddings have barely moved from their random start
        names = "\n".join(["ann", "bob", "eve", "maximilian", "jo"] * 4) + "\n"
        run = dict(self.synthetic_run([3.3, 3.2, 3.4, 3.1, 3.3, 3.2, 3.15]), val_loss=3.28, val_count=1000,
                   text=names, config=microgpt.Config(steps=7))
        page = microgpt.report_page(run)
        loss = page.split("<h2>The loss curve</h2>")[1].split("</figcaption>")[0]
        wpe = page.split("<h3>wpe: position embeddings</h3>")[1].split("</figcaption>")[0]
        gap = 3.28 - sum(run["losses"][-3:]) / 3            # the last 3 steps against all the held-out names
        self.assertIn(f"{gap:.2f} above the training loss (a mean of only 3 steps", loss)
        self.assertIn("the run is too short to tell", loss)
        self.assertNotIn("by heart", loss)
        self.assertIn("after only 7 steps the run is too short to tell", wpe)
        for untrue in ("seldom", "training used all of them"):
            self.assertNotIn(untrue, wpe)

    def test_the_samples_caption_says_is_for_one_name_from_the_data_and_are_for_more(self):
        run = self.synthetic_run([3.3 - 0.01 * i for i in range(50)])
        for known, verb in ((["anna"], "1 of 3 is a name"), (["anna", "bob"], "2 of 3 are names")):
            run["snapshots"] = [{"step": 0, "samples": ["xq", "zz", "qq"]},
                                {"step": 50, "samples": known + ["zzz"] * (3 - len(known))}]
            notes = microgpt.snapshots_section(run, "docs", run["config"], ["anna", "bob", "cy"])
            with self.subTest(known=known):
                self.assertIn(f"at the end {verb} from the data", notes)

    def test_the_samples_caption_quotes_its_surprise_where_it_is_in_a_long_sample(self):
        run = self.synthetic_run([3.3 - 0.01 * i for i in range(50)])
        tokens = ["ab", "cd", "ef"] * 10 + ["Q"] + ["gh"] * 11        # a BPE-like sample of 83 characters
        run["chars"], run["samples"] = sorted(set(tokens)), ["".join(tokens)]
        run["sample_ids"] = [[run["chars"].index(t) for t in tokens]]
        probs = [0.5] * len(tokens)
        probs[30] = 0.001                                                  # the Q, past the 40th character
        notes = microgpt.samples_section(run, run["config"], [probs], True)
        self.assertIn('<div class="samples tokens">', notes)     # tokens of several characters: kept apart
        self.assertIn("the biggest surprise is 'Q' in '\u2026efabcdefabcdefabcdefQghghghghghghghghghgh\u2026', at 0.10%",
                      html.unescape(notes))
        self.assertEqual(microgpt.around(["a", "b", "c"], 1), "abc")      # short: all of it, no ellipsis

    def test_percentages_keep_two_significant_digits_and_never_show_a_drawn_token_as_0(self):
        # the seventh tester: a --bpe 3000 model's surprise (p = 1.6e-05) read "at 0.00%"
        cases = {0.43: "43%", 0.043: "4.3%", 0.0043: "0.43%", 0.00094: "0.094%", 1.6e-05: "0.0016%",
                 3.7e-08: "3.7e-06%", 0.0: "0%", 1.0: "100%", 0.0002: "0.020%"}     # a trailing zero kept
        self.assertEqual({p: microgpt.percent(p) for p in cases}, cases)

    def test_a_loaded_models_examples_skip_its_empty_samples(self):
        # the seventh tester: a barely trained model's page looked inside an empty sample,
        # titled "Predictions for" with nothing after it
        config, chars = microgpt.Config(), list("abc")
        examples = microgpt.example_sequences("docs", config, chars, None, [], None, [[], [0, 1], [], [2]])
        self.assertEqual(examples, [([3, 0, 1], [0, 1, 3]), ([3, 2], [2, 3])])
        self.assertEqual(microgpt.example_sequences("docs", config, chars, None, [], None, [[], []]), [])
        # and when every sample is empty, the section says why it has nothing (the eighth tester)
        run = self.synthetic_run([3.3 - 0.01 * i for i in range(50)])
        run["examples"], run["samples"], run["sample_ids"] = [], [""], [[]]
        page = microgpt.report_page(run)
        self.assertIn("Nothing to look inside: this run has no held-out names, and the samples it drew all ended "
                      "at once (empty).", page)
        self.assertIn("Every sample ended at once: the first token the model drew was the end of a name (BOS), so "
                      "there is nothing to shade.", page)

    def test_the_predictions_table_cuts_long_tokens_short_and_marks_itself_wide(self):
        # the seventh tester: a long --explain of a --bpe model did not fit a 1024x768 slide
        names = ["a", "shazampocus", "<BOS>"]
        example = {"probs": [[0.2, 0.7, 0.1], [0.5, 0.3, 0.2]], "tokens": [2, 1], "targets": [1, 0]}
        table = microgpt.prediction_table(example, names)
        self.assertIn('title="shazampocus">shazamp\u2026</span>', table)
        self.assertNotIn(">shazampocus<", table)
        self.assertIn('class="predictions wide"', table)
        narrow = microgpt.prediction_table(example, ["a", "bb", "<BOS>"])
        self.assertIn('class="predictions"', narrow)                 # <BOS> (5 characters) is not wide

    def test_a_shaded_tokens_hover_number_is_never_0_000(self):
        # the ninth tester: 87 of 96 tokens of a --bpe 3000 page's samples hovered as 0.000
        html_text = microgpt.shaded_text(["ab", "cd"], [0.5, 1.6e-05])
        self.assertIn('title="0.500">ab<', html_text)
        self.assertIn('title="1.6e-05">cd<', html_text)

    def test_the_transition_matrix_labels_the_rows_its_caption_names(self):
        rows, labels, keep = [[0.5, 0.5]] * 81, [f"{i:04d}" for i in range(81)], [1, 40, 79]
        for font in (microgpt.FONT, microgpt.PRESENT_FONT):
            picture = microgpt.heat_map(rows, labels, ["0", "1"], microgpt.VIRIDIS, 0, 1, "next", "state", "p",
                                        "matrix", font, keep=keep)
            drawn = {t.text: float(t.get("y")) for t in ET.fromstring(picture).iter("text") if t.text in labels}
            with self.subTest(font=font):
                self.assertLess(len(drawn), 81)                       # thinned out, but
                for i in keep:
                    self.assertIn(labels[i], drawn)                   # never the rows the caption names
                ys = sorted(drawn.values())
                self.assertGreaterEqual(min(b - a for a, b in zip(ys, ys[1:])), font)     # none on another

    def test_when_printed_the_inside_heading_and_intro_stay_on_the_page_of_the_first_table(self):
        page = microgpt.report_page(self.synthetic_run([3.3 - 0.01 * i for i in range(50)]))
        kept = re.search(r'<div class="keep">(.*?)</div></div>', page, re.S)
        self.assertIsNotNone(kept)
        self.assertTrue(kept.group(1).startswith("<h2>Inside one name</h2>"))
        self.assertIn('<table class="predictions">', kept.group(1))
        printed = page.split("@media print{")[1].split("</style>")[0]
        self.assertIn(".keep{break-inside:avoid}", printed)

    def test_legends_and_captions_follow_the_run_length_and_options(self):
        page = microgpt.report_page(self.synthetic_run([3.3 - 0.01 * i for i in range(50)], num_samples=0))
        self.assertIn("mean of the 11 steps centred on each", page)      # a tenth of the run, not 100 steps
        self.assertIn("mean of the last 50 steps", page)
        self.assertNotIn("100 steps", page)
        self.assertIn("printed no samples (--num-samples 0)", page)
        self.assertNotIn("as the run printed them", page)

    def test_palettes_run_dark_to_light_and_blue_through_white_to_orange(self):
        def lightness(colour):
            r, g, b = (int(colour[k:k + 2], 16) for k in (1, 3, 5))
            return 0.299 * r + 0.587 * g + 0.114 * b
        ramp = [lightness(microgpt.colour_at(microgpt.VIRIDIS, i / 20)) for i in range(21)]
        self.assertEqual(ramp, sorted(ramp))                  # sequential: lightness only ever rises
        self.assertEqual(microgpt.colour_at(microgpt.BLUE_ORANGE, 0.5), "#f7f7f7")
        low, high = microgpt.colour_at(microgpt.BLUE_ORANGE, 0), microgpt.colour_at(microgpt.BLUE_ORANGE, 1)
        self.assertGreater(int(low[5:7], 16), int(low[1:3], 16))      # blue end: more blue than red
        self.assertGreater(int(high[1:3], 16), int(high[5:7], 16))    # orange end: more red than blue

    def test_escape_makes_any_text_safe_in_html_and_svg(self):
        nasty = '<script>alert("x")</script> & \'quotes\' é 名 \U0001F600'
        escaped = microgpt.escape(nasty)
        self.assertNotIn("<", escaped)
        self.assertNotIn('"', escaped)
        root = ET.fromstring(f'<svg><text title="{escaped}">{escaped}</text></svg>')
        self.assertEqual(root[0].text, nasty)
        self.assertEqual(root[0].get("title"), nasty)

    def test_is_microgpt_report_knows_its_own_pages_and_nothing_else(self):
        with tempfile.TemporaryDirectory() as tmp:
            ours = write_text(tmp, "ours.html", "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n"
                              '<meta name="generator" content="microgpt">\n</head></html>')
            theirs = write_text(tmp, "theirs.html", "<!DOCTYPE html><html><head><title>mine</title></head></html>")
            with open(os.path.join(tmp, "binary.html"), "wb") as f:
                f.write(b"\xff\xfe\x00\x01")
            self.assertTrue(microgpt.is_microgpt_report(ours))
            self.assertFalse(microgpt.is_microgpt_report(theirs))
            self.assertFalse(microgpt.is_microgpt_report(os.path.join(tmp, "binary.html")))
            self.assertFalse(microgpt.is_microgpt_report(os.path.join(tmp, "missing.html")))
            self.assertFalse(microgpt.is_microgpt_report(tmp))


class ReportCommandLineTest(TempDirTestCase):

    def test_report_paths_that_cannot_be_written_are_refused_before_training(self):
        os.mkdir(os.path.join(self.tmp, "a_directory"))
        theirs = write_text(self.tmp, "theirs.html", "<html><body>someone's own page</body></html>")
        base = ["--input", self.names, "--steps", "2"] + TINY
        assert_refused(self, self.tmp,
                       base + ["--report", os.path.join(self.tmp, "a_directory")],
                       base + ["--report", os.path.join(self.tmp, "missing", "report.html")],
                       base + ["--report", theirs],
                       base + ["--report", ""])
        self.assertEqual(read(theirs), "<html><body>someone's own page</body></html>")

    @unittest.skipIf(os.name == "nt", "chmod does not stop writing into a directory on Windows")
    @unittest.skipIf(hasattr(os, "geteuid") and os.geteuid() == 0, "root can write anywhere")
    def test_report_into_a_read_only_directory_is_refused_before_training(self):
        locked = os.path.join(self.tmp, "locked")
        os.mkdir(locked)
        os.chmod(locked, 0o500)
        self.addCleanup(os.chmod, locked, 0o700)
        assert_refused(self, self.tmp, ["--input", self.names, "--steps", "2", "--report",
                                        os.path.join(locked, "report.html")] + TINY)

    def test_a_report_replaces_an_earlier_report(self):
        path = os.path.join(self.tmp, "report.html")
        first = run_main(["--input", self.names, "--steps", "2", "--num-samples", "1", "--report", path] + TINY,
                         cwd=self.tmp)
        assert_ok(self, first)
        second = run_main(["--input", self.names, "--steps", "3", "--num-samples", "1", "--report", path] + TINY,
                          cwd=self.tmp)
        assert_ok(self, second)
        self.assertEqual(len(page_data(read(path))["losses"]), 3)
        self.assertEqual([n for n in os.listdir(self.tmp) if n.endswith(".tmp")], [])

    def test_report_does_not_change_what_the_run_prints(self):
        bits = write_text(self.tmp, "bits.txt", BITS)
        runs = []
        for common in (["--input", self.names, "--steps", "12", "--num-samples", "3"] + TINY,
                       ["--input", bits, "--stream", "--block-size", "3", "--steps", "6", "--batch", "2",
                        "--length", "20"] + TINY[:4]):
            runs += [common, common + ["--report", os.path.join(self.tmp, f"r{len(runs)}.html")]]
        results = run_many(runs, self.tmp)
        for result in results:
            assert_ok(self, result)

        def numbers(stdout):
            return [line for line in stdout.splitlines()
                    if not any(m in line for m in TIMING_MARKERS) and not line.startswith("wrote ")]
        for without, with_report in (results[0:2], results[2:4]):
            self.assertEqual(numbers(with_report.stdout), numbers(without.stdout))

    def test_user_text_is_escaped_in_the_page(self):
        # Documents full of characters that mean something in HTML, and some that are not ASCII.
        docs = ['a<b>c', 'x&amp;y', 'q"z\'', 'é</svg>', '名前', '</script x>', 'ab&c', 'zz>']
        data_path = write_text(self.tmp, "odd <&> names.txt", "\n".join(docs) + "\n")
        path = os.path.join(self.tmp, "report.html")
        explain = '</script <b&"é'     # in the JSON block, "</script " would end it early
        result = run_main(["--input", data_path, "--steps", "3", "--num-samples", "3", "--explain", explain,
                           "--report", path] + TINY + ["--block-size", "16"], cwd=self.tmp)
        assert_ok(self, result)
        page = read(path)
        found = parts(page)
        allowed = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "table", "tr", "th",
                   "td", "figure", "figcaption", "div", "span", "i", "svg", "text", "rect", "line", "path", "circle",
                   "script", "ul", "li", "nav", "a"}
        self.assertLessEqual({tag for tag, _ in found.tags}, allowed)
        self.assertEqual(len([tag for tag, _ in found.tags if tag == "script"]), 1)
        for picture in svgs(page):
            ET.fromstring(picture)
        # A browser ends the script element at "</script" followed by a space, "/" or ">",
        # whatever it holds, so the JSON block must hold no "<" at all.
        [blob] = DATA_BLOCK.findall(page)
        self.assertNotIn("<", blob)
        data = page_data(page)
        self.assertIn("<", data["chars"])
        self.assertEqual(data["examples"][0]["text"], explain)
        self.assertIn("odd &lt;&amp;&gt; names.txt", page)


if __name__ == "__main__":
    unittest.main()
