"""A model that remembers its run: stop a run with a signal, --resume it, and get exactly the
numbers and weights of a run that never stopped; fine-tuning that goes on with Adam's memory;
a model file that training would wreck is kept; --temperature 0 is greedy; a loaded model
samples with its own seed."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from unittest import mock

from tests.support import (scratch_directory, set_class_fixture, MICROGPT_COMMAND, REPO, assert_ok, assert_refused, in_background, microgpt, run_cli,
                           run_main, write_text)

TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8"]   # a small model: the point is the bookkeeping
STEPS = 8


def names(count):
    with open(os.path.join(REPO, "names.txt"), encoding="utf-8") as f:
        return f.read().split()[:count]


def without_timings(stdout):
    """The run's printed numbers, without the times that differ from run to run."""
    lines = []
    for line in stdout.splitlines():
        if line.startswith(("data:", "model:", "validating:", "resuming")):
            continue                      # the data line names the path; validating: depends on time
        line = re.sub(r" \| [\d.]+ ms/step \| \d+ s left", "", line)
        line = re.sub(r"^trained .* steps in .*; (smoothed loss .*)$", r"\1", line)
        line = re.sub(r"^saved the model to .*", "saved the model", line)
        lines.append(line)
    return lines


def step_of(line):
    match = re.match(r"step\s+(\d+)/", line)
    return int(match.group(1)) if match else None


def run_all(commands, real=False):
    """Command lines (args, cwd) or (args, cwd, env), each in this process (run_main), or with
    real=True each in a new process (run_cli), one after another; env (MICROGPT_STOP_AFTER_STEP:
    the run sends itself a real SIGINT after that step, which main()'s handler catches) is set
    for that run only. A Ctrl-C from outside, to a real process, is test_cli's CtrlCTest (and
    SignalAtARandomMoment, slow)."""
    results = []
    for args, cwd, *env in commands:
        if real:
            results.append(run_cli(args, cwd, env[0] if env else None))
            continue
        with mock.patch.dict(os.environ, env[0] if env else {}):
            results.append(run_main(args, cwd))
    return results


def checkpoint(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def stop_and_resume_runs():
    """StopAndResume's runs, in new processes, in the background (support.in_background)."""
    fixture = {"_tmp": scratch_directory()}
    tmp = fixture["tmp"] = fixture["_tmp"].name
    write_text(tmp, "names.txt", "\n".join(names(120)) + "\n")
    write_text(tmp, "text.txt", " ".join(names(120)) + "\n")
    stops = fixture["stops"] = {"docs": random.randint(1, STEPS - 1), "stream": random.randint(1, STEPS - 1)}
    modes = {"docs": ["--input", "names.txt", "--batch", "3", "--num-samples", "4"],
             "stream": ["--input", "text.txt", "--stream", "--batch", "2", "--length", "60", "--num-samples", "3"]}
    args = fixture["args"] = {mode: TINY + ["--steps", STEPS] + extra for mode, extra in modes.items()}
    args["docs"] += ["--report", "page.html"]     # the page, in one of the modes
    commands = []
    for mode in modes:
        # The stopped run has --report too, as the uninterrupted one (a run with --report
        # validates its history on more documents), but never gets to write its page.
        commands.append((args[mode] + ["--save", f"{mode}-whole.json"], tmp))
        commands.append((args[mode] + ["--save", f"{mode}-stopped.json"], tmp,
                         {"MICROGPT_STOP_AFTER_STEP": str(stops[mode])}))
    results = run_all(commands, real=True)
    fixture["whole"] = {"docs": results[0], "stream": results[2]}
    fixture["stopped"] = {"docs": results[1], "stream": results[3]}
    fixture["stopped_files"] = {mode: checkpoint(os.path.join(tmp, f"{mode}-stopped.json")) for mode in modes}
    with open(os.path.join(tmp, "page.html"), encoding="utf-8") as f:
        fixture["whole_page"] = f.read()
    os.remove(os.path.join(tmp, "page.html"))
    results = run_all([(["--resume", "docs-stopped.json", "--report", "page.html"], tmp),
                       (["--resume", "stream-stopped.json"], tmp)], real=True)
    fixture["resumed"] = dict(zip(modes, results))
    return fixture


STOP_AND_RESUME = in_background(stop_and_resume_runs)


class StopAndResume(unittest.TestCase):
    """One run of STEPS steps, and the same run stopped by a SIGINT after a random step k and
    resumed: in names mode and in stream mode, with --batch > 1 and --report."""

    @classmethod
    def setUpClass(cls):
        set_class_fixture(cls, STOP_AND_RESUME)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def context(self, mode):
        return (f"\nstopped after step {self.stops[mode]} (random)\nstopped run:\n{self.stopped[mode].stderr}"
                f"\nresumed run:\n{self.resumed[mode].stdout}{self.resumed[mode].stderr}")

    def test_a_run_stopped_by_a_signal_saves_after_its_step_and_exits_130(self):
        for mode in ("docs", "stream"):
            with self.subTest(mode=mode):
                self.assertEqual(self.stopped[mode].returncode, 130, self.context(mode))
                saved = self.stopped_files[mode]
                self.assertEqual(len(saved["history"]["losses"]), self.stops[mode])
                self.assertEqual(saved["optimizer"]["step"], self.stops[mode])
                self.assertEqual(saved["training"]["steps"], self.stops[mode])

    def test_resumed_run_saves_bit_for_bit_the_weights_and_state_of_an_uninterrupted_run(self):
        for mode in ("docs", "stream"):
            with self.subTest(mode=mode):
                assert_ok(self, self.resumed[mode])
                whole = checkpoint(os.path.join(self.tmp, f"{mode}-whole.json"))
                resumed = checkpoint(os.path.join(self.tmp, f"{mode}-stopped.json"))
                for key in ("state_dict", "optimizer", "rng", "history", "training", "run", "config", "chars"):
                    self.assertEqual(resumed[key], whole[key], f"{key} differs" + self.context(mode))

    def test_resumed_run_prints_the_numbers_of_an_uninterrupted_run_from_the_stop_on(self):
        for mode in ("docs", "stream"):
            with self.subTest(mode=mode):
                k = self.stops[mode]
                whole = without_timings(self.whole[mode].stdout)
                expected = [line for line in whole if step_of(line) is None or step_of(line) > k]
                resumed = without_timings(self.resumed[mode].stdout)
                self.assertEqual(resumed, expected, self.context(mode))
                self.assertTrue(any(line.startswith("validation loss:") for line in resumed))
                self.assertTrue(any(line.startswith("smoothed loss") for line in resumed))

    def test_resumed_report_shows_the_whole_runs_history(self):
        pages = []
        with open(os.path.join(self.tmp, "page.html"), encoding="utf-8") as f:
            resumed_page = f.read()
        for page in (self.whole_page, resumed_page):
            data = json.loads(re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S).group(1))
            pages.append({key: data[key] for key in ("losses", "val_points", "samples_during_training",
                                                     "val_loss", "samples")})
        self.assertEqual(pages[1], pages[0], self.context("docs"))
        self.assertEqual(len(pages[0]["losses"]), STEPS)
        # validation at 0, 1, 2, 5, 10 and every fifth of the run (report_recorder's steps):
        # of 8 steps, the fifths are 1.6, 3.2, 4.8, 6.4 and 8, rounded
        self.assertEqual([step for step, _ in pages[0]["val_points"]], [0, 1, 2, 3, 5, 6, 8])


def stop_inside_a_step_runs():
    """StopInsideAStep's runs, in new processes, in the background (support.in_background)."""
    fixture = {"_tmp": scratch_directory()}
    tmp = fixture["tmp"] = fixture["_tmp"].name
    write_text(tmp, "names.txt", "\n".join(names(60)) + "\n")
    write_text(tmp, "text.txt", " ".join(names(60)) + "\n")
    fixture["args"] = {"docs": TINY + ["--input", "names.txt", "--steps", "4", "--batch", "3", "--num-samples", "2"],
                       "stream": TINY + ["--input", "text.txt", "--stream", "--steps", "4", "--batch", "3",
                                         "--length", "30", "--num-samples", "1"]}
    whole, stopped, saved, resumed = {}, {}, {}, {}
    fixture.update(whole=whole, stopped=stopped, saved=saved, resumed=resumed)
    for mode, args in fixture["args"].items():
        whole[mode], stopped[mode] = run_all([
            (args + ["--save", f"{mode}-whole.json"], tmp),
            (args + ["--save", f"{mode}-stopped.json"], tmp, {"MICROGPT_STOP_DURING_STEP": "3:1"})], real=True)
        saved[mode] = checkpoint(os.path.join(tmp, f"{mode}-stopped.json"))
        resumed[mode] = run_cli(["--resume", f"{mode}-stopped.json"], tmp)
    return fixture


STOP_INSIDE_A_STEP = in_background(stop_inside_a_step_runs)


class StopInsideAStep(unittest.TestCase):
    """A stop signal between two documents of a step of several (--batch > 1, or all): the
    step is given up, and the model, Adam's state, the RNG (stream mode draws its windows with
    it) and the history are saved as they were after the step before. The run sends itself a
    real SIGINT after document d of step k (MICROGPT_STOP_DURING_STEP=k:d)."""

    @classmethod
    def setUpClass(cls):
        set_class_fixture(cls, STOP_INSIDE_A_STEP)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def test_a_step_stopped_between_documents_is_given_up_and_the_step_before_is_saved(self):
        for mode in self.args:
            with self.subTest(mode=mode):
                stopped = self.stopped[mode]
                self.assertEqual(stopped.returncode, 130, stopped.stderr)
                self.assertIn("interrupted by SIGINT during step 3 of 4, which was given up; saving the model "
                              f"after step 2 to {mode}-stopped.json", stopped.stderr)
                self.assertNotIn("step 3/4", stopped.stdout)
                saved = self.saved[mode]
                self.assertEqual(len(saved["history"]["losses"]), 2)
                self.assertEqual(saved["optimizer"]["step"], 2)
                self.assertEqual(saved["training"]["steps"], 2)

    def test_the_resumed_run_ends_bit_for_bit_as_a_run_that_never_stopped(self):
        for mode in self.args:
            with self.subTest(mode=mode):
                assert_ok(self, self.resumed[mode])
                whole = checkpoint(os.path.join(self.tmp, f"{mode}-whole.json"))
                resumed = checkpoint(os.path.join(self.tmp, f"{mode}-stopped.json"))
                for key in ("state_dict", "optimizer", "rng", "history", "training", "run"):
                    self.assertEqual(resumed[key], whole[key], f"{key} differs\n{self.stopped[mode].stderr}")
                expected = [line for line in without_timings(self.whole[mode].stdout)
                            if step_of(line) is None or step_of(line) > 2]
                self.assertEqual(without_timings(self.resumed[mode].stdout), expected)

    def test_a_stop_inside_the_first_step_saves_nothing_and_says_so(self):
        with mock.patch.dict(os.environ, {"MICROGPT_STOP_DURING_STEP": "1:2"}):
            result = run_main(self.args["stream"] + ["--save", "first.json"], self.tmp)
        self.assertEqual(result.returncode, 130, result.stderr)
        self.assertEqual(result.stderr.strip().splitlines()[-1], "interrupted by SIGINT during step 1 of 4, "
                         "before any step was finished: nothing to save")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "first.json")))


class SignalAtARandomMoment(unittest.TestCase):
    @unittest.skipUnless(os.environ.get("MICROGPT_SLOW"), "slow end-to-end check; CI sets MICROGPT_SLOW=1")
    def test_a_run_stopped_by_sigterm_at_a_random_moment_resumes_to_the_same_model(self):
        with tempfile.TemporaryDirectory() as tmp:
            write_text(tmp, "text.txt", " ".join(names(400)) + "\n")
            args = TINY + ["--input", "text.txt", "--stream", "--steps", "150", "--batch", "2", "--length", "40"]
            whole = run_cli(args + ["--save", "whole.json"], tmp)
            assert_ok(self, whole)
            for attempt in range(5):
                proc = subprocess.Popen(MICROGPT_COMMAND + args + ["--save", "stopped.json"],
                                        cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for line in proc.stdout:      # step 1 is printed (and flushed) after the first step
                    if line.startswith("step"):
                        break
                time.sleep(random.uniform(0, 0.5))
                proc.send_signal(signal.SIGTERM)
                out, err = proc.communicate(timeout=120)
                if proc.returncode == 143 and len(checkpoint(os.path.join(tmp, "stopped.json"))["history"]["losses"]) < 150:
                    break
                os.remove(os.path.join(tmp, "stopped.json"))   # it finished first: try again
            self.assertEqual(proc.returncode, 143, err)
            resumed = run_cli(["--resume", "stopped.json"], tmp)
            assert_ok(self, resumed)
            self.assertEqual(checkpoint(os.path.join(tmp, "stopped.json"))["state_dict"],
                             checkpoint(os.path.join(tmp, "whole.json"))["state_dict"])
            self.assertEqual(without_timings(resumed.stdout)[-3:], without_timings(whole.stdout)[-3:])


def fine_tuning_runs():
    """FineTuning's runs, in new processes, in the background (support.in_background)."""
    fixture = {"_tmp": scratch_directory()}
    tmp = fixture["tmp"] = fixture["_tmp"].name
    write_text(tmp, "names.txt", "\n".join(names(200)) + "\n")
    fixture["base"] = run_cli(TINY + ["--input", "names.txt", "--num-samples", "0", "--steps", "40",
                                      "--save", "base.json"], tmp)
    with open(os.path.join(tmp, "base.json"), "rb") as f:
        base_bytes = fixture["base_bytes"] = f.read()
    old = json.loads(base_bytes)
    for key in ("history", "optimizer", "rng", "run"):
        del old[key]
    write_text(tmp, "old.json", json.dumps(old))
    for name in ("tuned.json", "stopped.json", "one.json", "good.json", "kept.json", "fresh.json"):
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(base_bytes)
    tune = ["--num-samples", "0", "--input", "names.txt", "--steps"]
    names_of_runs = ("tuned", "page", "one", "good", "kept", "old2", "fresh")
    runs = fixture["runs"] = dict(zip(names_of_runs, run_all([(args, tmp) for args in (
        ["--load", "tuned.json", "--save", "tuned.json"] + tune + ["20"],
        ["--load", "tuned.json", "--num-samples", "0", "--report", "tuned.html"],
        ["--load", "one.json", "--save", "one.json"] + tune + ["1"],
        ["--load", "good.json", "--save", "good.json", "--lr", "0.5"] + tune + ["1"],   # issue 16 row 2
        ["--load", "kept.json", "--save", "kept.json", "--lr", "3000"] + tune + ["1"],
        ["--load", "old.json", "--save", "old2.json"] + tune + ["10"],
        TINY + ["--save", "fresh.json", "--lr", "1000"] + tune + ["1"])], real=True)))
    # the same fine-tuning as "tuned", stopped after its step 5 and resumed
    runs["stopped"], runs["resumed"] = run_all([
        (["--load", "stopped.json", "--save", "stopped.json"] + tune + ["20"], tmp,
         {"MICROGPT_STOP_AFTER_STEP": "5"}),
        (["--resume", "stopped.json", "--num-samples", "0"], tmp)], real=True)
    return fixture


FINE_TUNING = in_background(fine_tuning_runs)


class FineTuning(unittest.TestCase):
    """--load FILE --steps N: Adam goes on with its saved m and v and its step count, the
    learning rate goes on down its line (stretched to end N steps later), and a file that
    would be replaced by a much worse model is kept."""

    @classmethod
    def setUpClass(cls):
        set_class_fixture(cls, FINE_TUNING)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def validation(self, result):
        return float(re.search(r"validation loss: ([\d.]+)", result.stdout).group(1))

    def test_fine_tuning_lowers_the_validation_loss_and_goes_on_counting_adams_steps(self):
        assert_ok(self, self.base)
        tuned = self.runs["tuned"]
        assert_ok(self, tuned)
        self.assertLess(self.validation(tuned), self.validation(self.base), tuned.stdout)
        saved = checkpoint(os.path.join(self.tmp, "tuned.json"))
        self.assertEqual(saved["optimizer"]["step"], 60)
        self.assertEqual(saved["training"]["steps"], 60)
        self.assertEqual(saved["run"]["start"], 40)
        self.assertEqual(len(saved["history"]["losses"]), 20)     # the history is this run's,
        self.assertEqual(len(saved["history"]["earlier"]["losses"]), 40)   # after the runs' before it

    def test_a_fine_tuned_models_history_goes_on_from_the_saved_runs(self):
        # base: steps 1..40 of the model; tuned: 41..60. The page of the fine-tuned model
        # shows all 60, with the validation points and samples of both runs, in model steps.
        assert_ok(self, self.runs["page"])
        base = json.loads(self.base_bytes)["history"]
        tuned = checkpoint(os.path.join(self.tmp, "tuned.json"))["history"]
        with open(os.path.join(self.tmp, "tuned.html"), encoding="utf-8") as f:
            page = f.read()
        data = json.loads(re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S).group(1))
        self.assertEqual(data["losses"], base["losses"] + tuned["losses"])
        self.assertEqual(data["first_step"], 0)
        # the fine-tuning run measured its step 0 (the model's step 40) on the same names as
        # the base run's last point: the same number, drawn once
        self.assertEqual(tuned["val_points"][0][1], base["val_points"][-1][1])
        self.assertEqual(data["val_points"], base["val_points"] + [[40 + step, loss] for step, loss
                                                                   in tuned["val_points"][1:]])
        self.assertEqual([s["step"] for s in data["samples_during_training"]],
                         [s["step"] for s in base["snapshots"]] + [40 + s["step"] for s in tuned["snapshots"][1:]])
        self.assertEqual(data["val_loss"], tuned["val_loss"])
        self.assertIn(f"fell from {base['val_points'][0][1]:.2f} at step 0 to {tuned['val_points'][-1][1]:.2f} "
                      "at step 60", page)

    def test_a_stopped_fine_tuning_resumes_to_the_same_model_and_whole_history(self):
        self.assertEqual(self.runs["stopped"].returncode, 130, self.runs["stopped"].stderr)
        assert_ok(self, self.runs["resumed"])
        resumed = checkpoint(os.path.join(self.tmp, "stopped.json"))
        self.assertEqual(resumed, checkpoint(os.path.join(self.tmp, "tuned.json")))
        self.assertEqual(resumed["history"]["earlier"]["losses"], json.loads(self.base_bytes)["history"]["losses"])

    def test_fine_tuning_uses_the_learning_rate_of_the_stretched_line(self):
        # An independent computation of one fine-tuning step: Adam's update, written out here,
        # with the saved m, v and step count and lr * (1 - 40 / 41) on the batch of step 40.
        assert_ok(self, self.runs["one"])
        base = json.loads(self.base_bytes)
        after = checkpoint(os.path.join(self.tmp, "one.json"))
        config, chars, params, mode, _ = microgpt.load_checkpoint(os.path.join(self.tmp, "base.json"))
        config.lr, rng = base["training"]["lr"], random.Random(base["training"]["seed"])
        docs = microgpt.split_documents(microgpt.read_text(os.path.join(self.tmp, "names.txt")))
        train_docs, _ = microgpt.train_val_split(docs, rng)
        tokens = microgpt.encode_document(train_docs[40 % len(train_docs)], chars)
        microgpt.add_gradient(tokens, params, config)
        flat = microgpt.flatten(params)
        m, v, t = base["optimizer"]["m"], base["optimizer"]["v"], base["optimizer"]["step"] + 1
        lr = config.lr * (1 - 40 / 41)
        expected = []
        for i, p in enumerate(flat):
            mi = config.beta1 * m[i] + (1 - config.beta1) * p.grad
            vi = config.beta2 * v[i] + (1 - config.beta2) * p.grad ** 2
            expected.append(p.data - lr * (mi / (1 - config.beta1 ** t)) / ((vi / (1 - config.beta2 ** t)) ** 0.5
                                                                             + config.eps))
        got = [x for name in microgpt.param_shapes(config, len(chars) + 1)
               for row in after["state_dict"][name] for x in row]
        self.assertEqual(len(got), len(expected))
        for a, b in zip(got, expected):
            self.assertAlmostEqual(a, b, delta=1e-12)

    def test_the_issues_one_step_at_lr_half_no_longer_wrecks_the_model_in_place(self):
        # issue 16 row 2: --load good.json --steps 1 --lr 0.5 --save good.json
        result = self.runs["good"]
        assert_ok(self, result)
        self.assertLess(self.validation(result), 1.1 * self.validation(self.base), result.stdout)

    def test_a_model_file_is_kept_when_training_makes_the_model_much_worse(self):
        # a loaded model fine-tuned at a wild rate, and a new model's one wild step
        for name in ("kept", "fresh"):
            result = self.runs[name]
            self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
            self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
            self.assertIn("much worse", result.stderr)
            with open(os.path.join(self.tmp, name + ".json"), "rb") as f:
                self.assertEqual(f.read(), self.base_bytes)
        self.assertFalse([name for name in os.listdir(self.tmp) if name.startswith("microgpt-rescued")])

    def test_an_older_checkpoint_without_the_run_still_loads_samples_and_fine_tunes(self):
        assert_ok(self, self.runs["old2"])
        # Adam starts from zero, at the rate of the line of 40 steps stretched to 50
        saved = checkpoint(os.path.join(self.tmp, "old2.json"))
        self.assertEqual(saved["optimizer"]["step"], 10)
        self.assertEqual(saved["training"]["steps"], 50)
        self.assertAlmostEqual(saved["training"]["lr"], 0.01 * 10 / 50)
        assert_refused(self, self.tmp, ["--resume", "old.json"])


class ResumeRefusals(unittest.TestCase):
    def test_resume_refuses_a_finished_run_changed_options_changed_data_and_damaged_state(self):
        with tempfile.TemporaryDirectory() as tmp:
            write_text(tmp, "names.txt", "\n".join(names(100)) + "\n")
            [stopped] = run_all([(TINY + ["--input", "names.txt", "--steps", "6", "--save", "s.json", "--num-samples",
                                          "0"], tmp, {"MICROGPT_STOP_AFTER_STEP": "2"})])
            self.assertEqual(stopped.returncode, 130, stopped.stderr)
            assert_ok(self, run_main(TINY + ["--input", "names.txt", "--steps", "3", "--save", "done.json", "--num-samples", "0"], tmp))
            saved = checkpoint(os.path.join(tmp, "s.json"))
            bad = dict(saved, optimizer=dict(saved["optimizer"], m=saved["optimizer"]["m"][:-1]))
            write_text(tmp, "bad-adam.json", json.dumps(bad))
            write_text(tmp, "bad-rng.json", json.dumps(dict(saved, rng=[3, [1, 2], None])))
            write_text(tmp, "bad-run.json", json.dumps(dict(saved, run=dict(saved["run"], lr="fast"))))
            write_text(tmp, "other.txt", "\n".join(names(101)) + "\n")
            assert_refused(self, tmp, ["--resume", "done.json"], ["--resume", "s.json", "--lr", "0.1"],
                           ["--resume", "s.json", "--input", "other.txt"],
                           ["--load", "bad-adam.json"], ["--load", "bad-rng.json"], ["--load", "bad-run.json"])


class Greedy(unittest.TestCase):
    def test_temperature_zero_takes_the_likeliest_token_and_the_lowest_id_of_a_tie(self):
        rng = random.Random(1)
        state = rng.getstate()
        self.assertEqual(microgpt.sample_token([0.1, 2.0, -1.0, 1.9], 0, rng), 1)
        self.assertEqual(microgpt.sample_token([3.0, 1.0, 3.0], 0, rng), 0)
        self.assertEqual(microgpt.sample_token([microgpt.Value(-1.0), microgpt.Value(5.0)], 0, rng), 1)
        self.assertEqual(rng.getstate(), state, "greedy sampling drew from the random stream")

    def test_temperature_zero_in_stream_mode_repeats_itself_and_negative_is_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            write_text(tmp, "text.txt", " ".join(names(200)) + "\n")
            result = run_main(TINY + ["--input", "text.txt", "--stream", "--steps", "10", "--temperature", "0",
                                     "--num-samples", "2", "--length", "30"], tmp)
            assert_ok(self, result)
            lines = result.stdout.splitlines()
            first, second = lines[lines.index("---") - 1], lines[lines.index("---") + 1]
            self.assertEqual(first, second)     # from the same start, the same likeliest path
            assert_refused(self, tmp, ["--temperature", "-1"], ["--temperature", "nan"])


def loaded_model_sampling_runs():
    """LoadedModelSampling's runs, in new processes, in the background (support.in_background)."""
    fixture = {"_tmp": scratch_directory()}
    tmp = fixture["tmp"] = fixture["_tmp"].name
    write_text(tmp, "names.txt", "\n".join(names(200)) + "\n")
    fixture["trained"] = run_cli(TINY + ["--input", "names.txt", "--steps", "10", "--seed", "7", "--save", "s.json",
                                         "--num-samples", "4", "--temperature", "1.5"], tmp)
    fixture["runs"] = run_all([(args, tmp) for args in (
        ["--load", "s.json", "--num-samples", "4", "--temperature", "1.5"],
        ["--load", "s.json", "--num-samples", "4", "--temperature", "1.5", "--seed", "42"],
        ["--load", "s.json", "--temperature", "0", "--num-samples", "2", "--seed", "1"],
        ["--load", "s.json", "--temperature", "0", "--num-samples", "2", "--seed", "2", "--report", "g.html"])],
        real=True)
    return fixture


LOADED_MODEL_SAMPLING = in_background(loaded_model_sampling_runs)


class LoadedModelSampling(unittest.TestCase):
    """A model trained with --seed 7 and loaded later: its samples, at a temperature and at 0."""

    @classmethod
    def setUpClass(cls):
        set_class_fixture(cls, LOADED_MODEL_SAMPLING)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def samples(self, result):
        assert_ok(self, result)
        return [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("sample")]

    def test_loading_without_seed_samples_with_the_checkpoints_seed(self):
        trained, loaded, other = (self.samples(r) for r in [self.trained] + self.runs[:2])
        self.assertEqual(loaded, trained)
        self.assertNotEqual(other, trained)   # seed 42 draws other names from this model

    def test_temperature_zero_samples_are_the_argmax_path_whatever_the_seed(self):
        one, two = self.samples(self.runs[2]), self.samples(self.runs[3])
        self.assertEqual(one, two)
        self.assertEqual(one[0], one[1])
        # The same name, found independently: from BOS, the token of largest probability each time.
        config, chars, params, _, _ = microgpt.load_checkpoint(os.path.join(self.tmp, "s.json"))
        weights, tokens = microgpt.inference_weights(params), [len(chars)]
        while len(tokens) <= config.block_size:
            probs = microgpt.explain(tokens, weights, config)[-1][0]
            token = probs.index(max(probs))
            if token == len(chars):
                break
            tokens.append(token)
        self.assertEqual(one[0], "".join(chars[t] for t in tokens[1:]))
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "g.html")))


if __name__ == "__main__":
    unittest.main()
