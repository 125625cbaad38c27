"""The --report page as a browser lays it out: no two pieces of text overlap, no text is cut
off by the edge of its picture, at 480, 800, 1280 and 1920 px wide, and at 1280 px no text
is smaller than 14 px (what a class can read on a projector).

The geometry is the browser's own: headless Chromium, driven through WebDriver (selenium),
measures every SVG <text> element and every line of HTML text. These tests are skipped
where selenium, chromium or chromedriver is missing.
"""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

from support import NAMES, REPO, assert_ok, run_many, write_text  # noqa: E402
from test_chat import TINY_PLAN  # noqa: E402

import microgpt

import argparse
import contextlib
import io
import json
import random
import shutil
import tempfile
import unittest

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
except ImportError:                      # a test-only package
    webdriver = None

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
WIDTHS = (480, 800, 1280, 1920)
BITS = "111101111011110" * 3
WORDS = "then the hat ate the ant than the hen " * 8     # 6 characters, and 10 merges: 16 tokens
# Names of 50 to 79 letters made of 8 syllables, which 40 merges turn into long tokens: as a
# --bpe 3000 model's samples, a title or caption quoting one is a word wider than a phone.
_syllables, _rng = ["abra", "cada", "ka", "zam", "ala", "pocus", "hocus", "shazam"], random.Random(3)
# 10 tokens of up to 11 letters (the table's widest rows): the seventh tester's 66-letter
# --explain of a --bpe 3000 model was cut off on a 1024x768 slide
LONG_EXPLAIN = "shazampocushocusabracadabrakazamalashazamhocuspocusshazam"
LONG_WORDS = "".join("".join(_rng.choice(_syllables) for _ in range(_rng.randint(14, 18))) + "\n" for _ in range(60))

# Every piece of text on the page with its box in page coordinates: SVG <text> elements
# (with the box of the picture they are in, and their size in CSS pixels), and each line
# of every HTML text node (a Range's client rects).
MEASURE = """
const found = [];
const page = (r) => [r.left + scrollX, r.top + scrollY, r.right + scrollX, r.bottom + scrollY];
for (const t of document.querySelectorAll('svg text')) {
  const picture = t.ownerSVGElement, frame = picture.getBoundingClientRect();
  const r = t.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  const scale = frame.width / picture.viewBox.baseVal.width;
  found.push({text: t.textContent, box: page(r), frame: page(frame),
              px: parseFloat(t.getAttribute('font-size')) * scale});
}
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  if (!n.textContent.trim() || n.parentElement.closest('svg, script, style, title')) continue;
  const range = document.createRange();
  range.selectNodeContents(n);
  const px = parseFloat(getComputedStyle(n.parentElement).fontSize);
  for (const r of range.getClientRects()) {
    if (r.width > 0.5 && r.height > 0.5) found.push({text: n.textContent.trim().slice(0, 40), box: page(r), px: px});
  }
}
// Pairs of boxes that overlap by more than 1 px both ways: sweep from left to right.
found.sort((a, b) => a.box[0] - b.box[0]);
const clashes = [];
for (let i = 0; i < found.length && clashes.length < 20; i++) {
  for (let j = i + 1; j < found.length && found[j].box[0] < found[i].box[2] - 1; j++) {
    const a = found[i].box, b = found[j].box;
    if (Math.min(a[2], b[2]) - Math.max(a[0], b[0]) > 1 && Math.min(a[3], b[3]) - Math.max(a[1], b[1]) > 1) {
      clashes.push([found[i].text, found[j].text, a.map(Math.round), b.map(Math.round)]);
    }
  }
}
const cut = found.filter(f => f.frame && (f.box[0] < f.frame[0] - 0.5 || f.box[1] < f.frame[1] - 0.5 ||
                                          f.box[2] > f.frame[2] + 0.5 || f.box[3] > f.frame[3] + 0.5))
                 .map(f => [f.text, f.box.map(Math.round), f.frame.map(Math.round)]);
const small = found.filter(f => f.px < 14).map(f => [f.text, Math.round(f.px * 10) / 10]);
return {count: found.length, clashes: clashes, cut: cut.slice(0, 20), small: small.slice(0, 20),
        width: document.documentElement.scrollWidth, viewport: innerWidth};
"""


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="microgpt-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    return driver, profile


def long_history(saved, path):
    """A copy of the checkpoint `saved` whose history is like the default run's: 1,000 noisy
    steps falling from 3.3 to 2.4, with a few spikes up and down, validation points on 25
    held-out names at report_recorder's steps and the final validation loss on 1,000."""
    with open(saved, encoding="utf-8") as f:
        checkpoint = json.load(f)
    rng, n = random.Random(0), 1000
    losses = [2.4 + 0.9 * 0.995 ** i + rng.gauss(0, 0.25) for i in range(n)]
    for i in (19, 262, 930):
        losses[i] = 5.1
    for i in (950, 970, 990):
        losses[i] = 1.2
    steps = sorted({0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 400, 600, 800, 1000})
    val = [[s, 2.44 + 0.88 * 0.99 ** s] for s in steps]
    snapshots = [{"step": s, "samples": ["anna", "mila", "jo", "kaya", "zed"]} for s in (0, 50, 200, 500, 1000)]
    checkpoint["history"] = {"losses": losses, "val_points": val, "snapshots": snapshots, "val_subset": 25,
                             "val_loss": 2.3667, "val_count": 1000}
    checkpoint["training"]["steps"] = n
    with open(path, "w", encoding="utf-8") as f:
        json.dump(checkpoint, f)


@unittest.skipUnless(webdriver, "selenium is not installed (a test-only package)")
@unittest.skipUnless(CHROMIUM and CHROMEDRIVER, "chromium and chromedriver are not installed")
class ReportLayoutTest(unittest.TestCase):
    """Twelve pages, written once by the real command line: the default model of names with
    few steps, and that model loaded with a long --explain name (16 positions, as many as a
    row of predictions and an attention map can have), a model of continuous text (its
    examples and samples as long as the default stream run's), a vocabulary of 2 tokens (a Markov chain graph),
    one of 3 (its predictions table has room for only 3 guesses), a chain of 81 states
    (drawn as its transition matrix), a chain of 16 states named by tokens of several
    characters (--bpe), and one of 16 tokens (--bpe), whose graph has a long legend; names
    of 50 to 79 letters in long --bpe tokens (titles and captions quote them unbroken), and
    that model loaded with a long --explain of 10 such tokens; the
    names model loaded from its checkpoint with a history as long as the default run's (1,000
    steps, spikes above and below the chart, validation points and the final validation
    loss), whose loss slide has a caption as long as the default run's; and the report card
    of --chat, from a tiny pipeline (tests/test_chat.py's) run in-process, since the command
    line's pipeline takes minutes."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        tmp = cls._tmp.name
        with open(os.path.join(REPO, "names.txt"), encoding="utf-8") as f:
            names = write_text(tmp, "names.txt", "".join(f.readlines()[:400]))     # the first 400 names
        with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
            text = write_text(tmp, "text.txt", f.read()[:3000])
        bits = write_text(tmp, "bits.txt", BITS)
        ab = write_text(tmp, "ab.txt", "ab\nba\naab\nbba\nabab\nb\na\nbab\n")
        abc = write_text(tmp, "abc.txt", "abcabcaabbccabc")
        words = write_text(tmp, "words.txt", WORDS)
        long_words = write_text(tmp, "long-words.txt", LONG_WORDS)
        cls.paths = {key: os.path.join(tmp, f"{key}.html") for key in ("names", "stream", "bits", "ab", "matrix",
                                                                       "bpe", "tokens", "words", "long", "explain",
                                                                       "wordsx", "chat")}
        results = run_many([
            ["--input", names, "--steps", "40", "--report", cls.paths["names"], "--save", "names.json"],
            ["--input", text, "--stream", "--steps", "30", "--n-embd", "8", "--n-head", "2",
             "--report", cls.paths["stream"]],                 # the default 16 positions and 200 characters
            ["--input", bits, "--stream", "--block-size", "3", "--steps", "15", "--batch", "all", "--n-embd", "8",
             "--n-head", "2",
             "--report", cls.paths["bits"]],
            ["--input", ab, "--steps", "30", "--num-samples", "0", "--n-embd", "8", "--report", cls.paths["ab"]],
            ["--input", abc, "--stream", "--block-size", "4", "--steps", "3", "--n-embd", "4", "--n-head", "1",
             "--report", cls.paths["matrix"]],
            ["--input", bits, "--stream", "--bpe", "2", "--block-size", "2", "--steps", "15", "--batch", "all",
             "--n-embd", "8", "--n-head", "2", "--report", cls.paths["bpe"]],
            ["--input", words, "--stream", "--bpe", "10", "--block-size", "1", "--steps", "15", "--n-embd", "8",
             "--n-head", "2", "--num-samples", "0", "--report", cls.paths["tokens"]],
            ["--input", long_words, "--bpe", "40", "--steps", "5", "--n-embd", "8", "--n-head", "2",
             "--num-samples", "3", "--report", cls.paths["words"], "--save", "words.json"],
        ], tmp)
        long_history(os.path.join(tmp, "names.json"), os.path.join(tmp, "long.json"))
        results += run_many([["--load", "long.json", "--report", cls.paths["long"]],
                             ["--load", "names.json", "--explain", "maximilianoxyz", "--report", cls.paths["explain"]],
                             ["--load", "words.json", "--explain", LONG_EXPLAIN, "--report", cls.paths["wordsx"]]],
                            tmp)
        cls.results = dict(zip(cls.paths, results))
        chat_names = write_text(tmp, "chat-names.txt", "\n".join(NAMES) + "\n")
        args = argparse.Namespace(load=None, input=chat_names, save=None, seed=42, temperature=0.5, report=None)
        plan = microgpt.ChatPlan(**TINY_PLAN)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            config, chat_chars, params, card = microgpt.chat_pipeline(args, plan, microgpt.StopSignals())
            microgpt.write_chat_report(cls.paths["chat"], card, plan, config, chat_chars, params)
        cls.results["chat"] = argparse.Namespace(returncode=0, stdout=out.getvalue(), stderr="")
        cls.driver, cls.profile = browser()
        cls.measured = {}

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        shutil.rmtree(cls.profile, ignore_errors=True)
        cls._tmp.cleanup()

    def measure(self, key, width):
        if (key, width) not in self.measured:
            assert_ok(self, self.results[key])
            self.driver.set_window_size(width, 900)
            self.driver.get("file://" + self.paths[key])
            self.measured[key, width] = self.driver.execute_script(MEASURE)
        return self.measured[key, width]

    def test_no_two_pieces_of_text_overlap_at_any_width(self):
        for key in self.paths:
            for width in WIDTHS:
                with self.subTest(page=key, width=width):
                    found = self.measure(key, width)
                    self.assertGreater(found["count"], 50)
                    self.assertEqual(found["clashes"], [])

    def test_no_text_is_cut_off_by_the_edge_of_its_picture(self):
        for key in self.paths:
            for width in WIDTHS:
                with self.subTest(page=key, width=width):
                    self.assertEqual(self.measure(key, width)["cut"], [])

    def test_the_page_is_no_wider_than_the_window(self):
        for key in self.paths:
            for width in WIDTHS:
                with self.subTest(page=key, width=width):
                    found = self.measure(key, width)
                    self.assertLessEqual(found["width"], found["viewport"])

    def test_at_1280_px_no_text_is_smaller_than_14_px(self):
        for key in self.paths:
            with self.subTest(page=key):
                self.assertEqual(self.measure(key, 1280)["small"], [])

    def test_the_presentation_view_shows_one_picture_filling_a_projectors_screen(self):
        # 1024x768, the page opened at its first picture (#fig-1, what the "Present" link does)
        assert_ok(self, self.results["names"])
        self.driver.set_window_size(1024, 768)
        for target in ("#fig-1", "#fig-2"):
            with self.subTest(target=target):
                self.driver.get("file://" + self.paths["names"] + target)
                found = self.driver.execute_script("""
                    const fig = document.querySelector(location.hash), box = fig.getBoundingClientRect();
                    const picture = fig.querySelector('svg, table').getBoundingClientRect();
                    return {position: getComputedStyle(fig).position, box: [box.left, box.top, box.width, box.height],
                            screen: [innerWidth, innerHeight], picture: picture.height,
                            caption: parseFloat(getComputedStyle(fig.querySelector('figcaption')).fontSize),
                            links: [...fig.querySelectorAll('nav a')].map(a => a.getAttribute('href'))};""")
                self.assertEqual(found["position"], "fixed")
                self.assertEqual([round(x) for x in found["box"]], [0, 0] + found["screen"])
                self.assertGreaterEqual(found["caption"], 20)
                number = int(target[5:])
                self.assertIn(f"#fig-{number + 1}", found["links"])
                if number > 1:
                    self.assertIn(f"#fig-{number - 1}", found["links"])
                if target == "#fig-1":        # the loss chart: what its long caption leaves, 40% at least
                    self.assertGreaterEqual(found["picture"], found["screen"][1] * 0.4 - 1)

    def present(self, key, width, height):
        """Every slide of a page in the presentation view on a width x height screen: its
        caption's bottom and its lowest part's (a caption may stand beside the picture), the
        screen's height, and its text smaller than 18 px (HTML text by its computed size; SVG
        text by its size times the scale the picture is drawn at)."""
        assert_ok(self, self.results[key])
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        try:
            self.driver.get("file://" + self.paths[key])
            slides = self.driver.execute_script("return document.querySelectorAll('figure.slide').length")
            found = []
            for number in range(1, slides + 1):
                self.driver.get(f"file://{self.paths[key]}#fig-{number}")
                found.append(self.driver.execute_script(PRESENT))
            return found
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def test_each_slide_of_the_presentation_view_fits_a_projectors_screen_with_its_caption(self):
        for key in ("names", "stream", "long", "explain", "bits", "bpe", "tokens", "matrix", "words", "wordsx",
                    "chat"):
            for width, height in ((1024, 768), (1280, 720)):
                for slide in self.present(key, width, height):
                    with self.subTest(page=key, screen=f"{width}x{height}", slide=slide["title"]):
                        self.assertEqual(slide["screen"], [width, height])
                        self.assertLessEqual(slide["caption"], height + 0.5)
                        self.assertLessEqual(slide["bottom"], height + 0.5)     # the picture too, beside it
                        self.assertLessEqual(slide["scrollWidth"], slide["clientWidth"])
                        self.assertFalse(slide["tableCut"])                         # no table scrolls sideways
                        self.assertFalse(slide["fitCut"])        # nor a table that may shrink (chat) up and down
                        self.assertEqual(slide["cut"], [])           # no text outside its picture (a y title)
                        self.assertLessEqual(slide["scrollHeight"], slide["clientHeight"])     # nothing below

    def test_the_presentation_views_predictions_show_3_guesses_at_1024_px_and_5_at_1440(self):
        for width, height, guesses in ((1024, 768, 3), (1280, 720, 3), (1440, 900, 5)):
            slides = [s for s in self.present("long", width, height) if s["title"].startswith("Predictions for")]
            self.assertEqual(len(slides), 3)
            for slide in slides:
                with self.subTest(screen=f"{width}x{height}", slide=slide["title"]):
                    self.assertEqual(slide["guesses"], guesses)

    def test_text_in_the_presentation_view_is_at_least_18_px_on_a_1024x768_and_a_1280x720_screen(self):
        # every slide, the Markov chain graph's too (the bits and bpe pages have one), the
        # transition matrix's (81 states, on the matrix page), and the attention maps of a long
        # example (16 positions: the stream page's windows, the explain page's name)
        titles, chat_titles = [], []
        for key in ("names", "stream", "long", "explain", "bits", "bpe", "matrix", "chat"):
            for width, height in ((1024, 768), (1280, 720)):
                for slide in self.present(key, width, height):
                    if width == 1024:
                        (chat_titles if key == "chat" else titles).append(slide["title"])
                    with self.subTest(page=key, screen=f"{width}x{height}", slide=slide["title"]):
                        self.assertEqual(slide["html"], [])
                        self.assertEqual(slide["svg"], [])
        self.assertEqual(titles.count("The Markov chain"), 2)
        self.assertEqual(titles.count("The transition matrix"), 1)
        # the card, each stage's curve, the answers
        self.assertEqual(chat_titles, ["The report card: pass rate on held-out requests", "pretrained", "SFT", "RL",
                                       "The RL assistant's answers"])

    def test_the_chat_cards_first_slide_is_its_table_and_its_last_the_answers_with_the_reward_hacking_note(self):
        assert_ok(self, self.results["chat"])
        self.driver.set_window_size(1024, 768)
        with open(self.paths["chat"], encoding="utf-8") as f:
            card = json.loads(f.read().split('id="microgpt-data">')[1].split("</script>")[0])
        for target, rows in (("#fig-1", len(card) + 1), ("#fig-5", len(card[-1]["answers"]))):
            with self.subTest(target=target):
                self.driver.get("file://" + self.paths["chat"] + target)
                found = self.driver.execute_script("""
                    const fig = document.querySelector(location.hash), table = fig.querySelector('table');
                    return {position: getComputedStyle(fig).position, rows: table.rows.length,
                            cells: [...table.querySelectorAll('td')].map(td => parseFloat(getComputedStyle(td).fontSize)),
                            text: table.innerText, caption: fig.querySelector('figcaption').textContent};""")
                self.assertEqual(found["position"], "fixed")
                self.assertEqual(found["rows"], rows)
                self.assertGreaterEqual(min(found["cells"]), 24)          # large type, not the page's 17 px
                if target == "#fig-1":
                    for row in card:
                        self.assertIn(f"{row['pass_rates']['starting with']:.1%}", found["text"])
                        self.assertIn(row["stage"], found["caption"])
                else:
                    self.assertIn("reward hacking, Part V.4", found["caption"])
                    for request, _, _ in card[-1]["answers"]:
                        self.assertIn(request, found["text"])


# One slide of the presentation view as the browser lays it out (see present() above).
PRESENT = """
const fig = document.querySelector(location.hash), small = (px) => Math.round(px * 10) / 10 < 18;
const svg = [], html = [], cut = [];
for (const t of fig.querySelectorAll('svg text')) {
  const picture = t.ownerSVGElement, frame = picture.getBoundingClientRect(), box = picture.viewBox.baseVal;
  if (t.getBoundingClientRect().width === 0) continue;             // not shown (the page's own copy)
  const px = parseFloat(getComputedStyle(t).fontSize) * Math.min(frame.width / box.width, frame.height / box.height);
  if (small(px)) svg.push([t.textContent, Math.round(px * 10) / 10]);
  const r = t.getBoundingClientRect(), sides = (b) => [b.left, b.top, b.right, b.bottom].map(Math.round);
  if (r.left < frame.left - 0.5 || r.top < frame.top - 0.5 || r.right > frame.right + 0.5 ||
      r.bottom > frame.bottom + 0.5) {
    cut.push([t.textContent, sides(r), sides(frame)]);      // outside its picture: cut off (a y title)
  }
}
const walker = document.createTreeWalker(fig, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  if (!n.textContent.trim() || n.parentElement.closest('svg') || !n.parentElement.getClientRects().length) continue;
  const px = parseFloat(getComputedStyle(n.parentElement).fontSize);
  if (small(px)) html.push([n.textContent.trim().slice(0, 30), px]);
}
return {title: fig.querySelector('h3').textContent, screen: [innerWidth, innerHeight],
        caption: fig.querySelector('figcaption').getBoundingClientRect().bottom,
        bottom: Math.max(...[...fig.children].map(child => child.getBoundingClientRect().bottom)),
        scrollWidth: fig.scrollWidth, clientWidth: fig.clientWidth, scrollHeight: fig.scrollHeight,
        clientHeight: fig.clientHeight, svg: svg.slice(0, 10), html: html.slice(0, 10), cut: cut.slice(0, 10),
        guesses: [...fig.querySelectorAll('.predictions th')].filter(th => /^guess/.test(th.textContent) &&
                                                                      th.getClientRects().length).length,
        tableCut: [...fig.querySelectorAll('.scroll')].some(box => box.scrollWidth > box.clientWidth + 0.5),
        fitCut: [...fig.querySelectorAll('.fit')].some(box => box.scrollHeight > box.clientHeight + 0.5)};
"""


if __name__ == "__main__":
    unittest.main()
