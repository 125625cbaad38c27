"""Tester 4's item 3: the page of a loaded model (--load names.json --report r.html) said
"data: none" and "documents", though the checkpoint records the data it was trained on."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

from support import (scratch_directory, TempDirTestCase, assert_ok, in_background, run_cli, run_main, trained_checkpoint,  # noqa: E402
                     write_text)

import microgpt

import html
import re
import shutil
import tempfile

TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8", "--num-samples", "0"]


def trained_on_the_shipped_names():
    """A model trained for one step on a copy of the shipped names.txt under another name
    (copy.txt), saved as m.json: in a new process, in the background (support.in_background),
    as its validation of 1,000 held-out names takes a second."""
    home = scratch_directory()
    shipped = microgpt.read_text(microgpt.default_data_path())
    data = write_text(home.name, "copy.txt", shipped)
    return home, shipped, run_cli(["--input", data, "--steps", "1", "--save", "m.json"] + TINY, home.name)


SHIPPED = in_background(trained_on_the_shipped_names)


def data_row(page):
    return html.unescape(re.search(r"<tr><th>data</th><td>(.*?)</td></tr>", page).group(1))


class LoadedModelPageTest(TempDirTestCase):

    def report_of(self, model):
        assert_ok(self, run_main(["--load", model, "--report", "r.html", "--num-samples", "0"], self.tmp))
        with open(os.path.join(self.tmp, "r.html"), encoding="utf-8") as f:
            return f.read()

    def test_a_loaded_models_page_names_the_shipped_names_it_was_trained_on_and_calls_them_names(self):
        # A copy elsewhere, under another name: the checkpoint's SHA-256 says it is names.txt.
        home, shipped, trained = SHIPPED.result()
        self.addCleanup(home.cleanup)
        assert_ok(self, trained)
        page = self.report_of(os.path.join(home.name, "m.json"))
        row = data_row(page)
        self.assertIn(f"{len(microgpt.split_documents(shipped)):,} names", row)
        self.assertIn("m.json", row)
        self.assertIn(microgpt.data_digest(shipped)[:12], row)
        self.assertNotIn("none", row)
        self.assertIn("held-out names", page)
        self.assertNotIn("held-out documents", page)
        self.assertRegex(page, r"<h1[^>]*>What microgpt learned from copy\.txt \(the model in m\.json\)</h1>")

    def test_a_loaded_models_page_names_other_data_by_its_file_and_calls_it_documents(self):
        # Called names.txt, but not the shipped text: documents, as the terminal says.
        model = trained_checkpoint(self.tmp, ["--steps", "1"] + TINY)
        page = self.report_of(model)
        row = data_row(page)
        self.assertTrue(row.startswith("names.txt (as model.json records it, SHA-256 "), row)
        self.assertIn("held-out documents", page)
        self.assertNotIn("held-out names", page)
