"""The command line of microgpt.py: main() called in this process (run_main), and run for
real in a new process where the process is the point (the exit code a shell sees, Ctrl-C).

Every bad input must end with exit code 2 and one line on stderr ("microgpt: error: ..."),
never a traceback, and must leave no broken or half-written file behind. The happy paths use
models of a few hundred parameters trained for a few steps, so the whole file runs in seconds.
"""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

from support import (MICROGPT_COMMAND, NAMES, TempDirTestCase, assert_ok, assert_refused, run_main,  # noqa: E402
                     write_text)

import microgpt

import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import unittest

TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8"]   # 1,1xx parameters: trains in milliseconds
TIMING_MARKERS = ("ms/step", "s left", " in ")
SAMPLE_LINE = re.compile(r"^sample +(\d+): (.*)$")


def sample_lines(stdout):
    """The generated documents, in order, from "sample  N: text" lines."""
    return [m.group(2) for m in map(SAMPLE_LINE.match, stdout.splitlines()) if m]


def temp_files(directory):
    return [name for name in os.listdir(directory) if name.endswith(".tmp") or name.startswith(".microgpt-")]


class BadDataTest(TempDirTestCase):

    def test_unusable_data_files_are_refused_with_exit_2(self):
        os.mkdir(os.path.join(self.tmp, "a_directory"))
        write_text(self.tmp, "empty.txt", "")
        write_text(self.tmp, "blank.txt", "   \n \n\n  \n")
        with open(os.path.join(self.tmp, "latin1.txt"), "wb") as f:
            f.write(b"\xff\xfe\x00abc")
        names = ("missing.txt", "a_directory", "empty.txt", "blank.txt", "latin1.txt")
        assert_refused(self, self.tmp, *[["--input", os.path.join(self.tmp, name), "--steps", "2"] + TINY
                                         for name in names])

    @unittest.skipIf(os.name == "nt", "chmod 000 does not make a file unreadable on Windows")
    @unittest.skipIf(hasattr(os, "geteuid") and os.geteuid() == 0, "root can read a chmod 000 file")
    def test_unreadable_data_file_is_refused_with_exit_2(self):
        path = write_text(self.tmp, "secret.txt", "emma\nava\n")
        os.chmod(path, 0)
        self.addCleanup(os.chmod, path, 0o600)
        assert_refused(self, self.tmp, ["--input", path, "--steps", "2"] + TINY)

    def test_prompt_with_unknown_character_is_refused_with_exit_2(self):
        [result] = assert_refused(self, self.tmp, ["--input", self.names, "--prompt", "emQ", "--steps", "2"] + TINY)
        self.assertIn("'Q'", result.stderr)

    def test_prompt_as_long_as_block_size_is_refused_with_exit_2(self):
        assert_refused(self, self.tmp, ["--input", self.names, "--n-embd", "8", "--n-head", "2", "--block-size", "4",
                                        "--prompt", "emma", "--steps", "2"])


class BadSettingsTest(TempDirTestCase):

    def test_impossible_hyperparameters_are_refused_with_exit_2(self):
        cases = [
            ["--n-embd", "10", "--n-head", "3"],
            ["--n-layer", "0"], ["--n-embd", "-8"], ["--n-head", "0"], ["--block-size", "-1"],
            ["--steps", "-1"], ["--steps", "0"],
            ["--temperature", "-1"],
            ["--lr", "0"], ["--lr", "-0.1"], ["--lr", "nan"], ["--lr", "inf"],
            ["--batch", "0"], ["--num-samples", "-1"],
        ]
        # the bad flag comes last, so it overrides the good value in the base command line
        base = ["--input", self.names, "--steps", "2"] + TINY
        assert_refused(self, self.tmp, *[base + bad for bad in cases])

    def test_malformed_command_lines_are_refused_with_exit_2(self):
        cases = [["--input", self.names] + TINY + bad for bad in (["--steps", "abc"], ["--batch", "some"],
                                                                  ["--no-such-flag"])]
        assert_refused(self, self.tmp, *cases[1:])
        assert_refused(self, self.tmp, cases[0], real=True)    # in a new process: the exit code a shell sees


class CheckpointTest(unittest.TestCase):
    """Shares one tiny trained docs checkpoint (read-only) between the tests."""

    @classmethod
    def setUpClass(cls):
        cls._shared = tempfile.TemporaryDirectory()
        cls.shared = cls._shared.name
        cls.names = write_text(cls.shared, "names.txt", "\n".join(NAMES) + "\n")
        cls.ckpt = os.path.join(cls.shared, "model.json")
        cls.train_args = ["--input", cls.names, "--steps", "5", "--num-samples", "4", "--save", cls.ckpt] + TINY
        cls.train_result = run_main(cls.train_args, cwd=cls.shared)
        if cls.train_result.returncode != 0:
            cls._shared.cleanup()
            raise AssertionError("training the shared checkpoint failed:\n" + cls.train_result.stderr)
        with open(cls.ckpt, encoding="utf-8") as f:
            cls.ckpt_json = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls._shared.cleanup()

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.tmp = self._tmp.name

    def corrupted(self, change):
        """A deep copy of the shared checkpoint, changed by change(copy) (which may return a
        replacement object)."""
        ckpt = json.loads(json.dumps(self.ckpt_json))
        replaced = change(ckpt)
        return ckpt if replaced is None else replaced

    # --- happy paths -----------------------------------------------------------------------

    def test_tiny_training_run_exits_0_and_prints_samples(self):
        assert_ok(self, self.train_result)
        samples = sample_lines(self.train_result.stdout)
        self.assertEqual(len(samples), 4)
        self.assertEqual([int(SAMPLE_LINE.match(l).group(1)) for l in self.train_result.stdout.splitlines()
                          if SAMPLE_LINE.match(l)], [1, 2, 3, 4])
        vocabulary = set("".join(NAMES))
        for sample in samples:
            self.assertLessEqual(set(sample), vocabulary)
            self.assertLessEqual(len(sample), 8)     # the context (block_size 8) holds BOS + 7, then one more

    def test_save_writes_a_complete_microgpt_json_checkpoint_and_no_temp_files(self):
        self.assertIn(f"saved the model to {self.ckpt}", self.train_result.stdout)
        ckpt = self.ckpt_json
        self.assertEqual(ckpt["format"], "microgpt")
        self.assertEqual(ckpt["version"], 1)
        self.assertEqual(ckpt["config"], {"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 8})
        self.assertEqual(ckpt["chars"], sorted(set("".join(NAMES))))
        vocab_size = len(ckpt["chars"]) + 1
        shapes = microgpt.param_shapes(microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8), vocab_size)
        self.assertEqual(set(ckpt["state_dict"]), set(shapes))
        for name, (rows, cols) in shapes.items():
            self.assertEqual(len(ckpt["state_dict"][name]), rows, name)
            self.assertTrue(all(len(row) == cols for row in ckpt["state_dict"][name]), name)
        self.assertEqual(temp_files(self.shared), [])
        config, chars, params, mode, _ = microgpt.load_checkpoint(self.ckpt)
        self.assertEqual((config.n_embd, mode, chars), (8, "docs", ckpt["chars"]))

    def test_same_seed_and_flags_give_the_same_output_apart_from_timing(self):
        again = os.path.join(self.tmp, "again.json")
        args = [again if a == self.ckpt else a for a in self.train_args]
        result = run_main(args, cwd=self.shared)     # the same folder: the data line shows the same path
        assert_ok(self, result)

        def comparable(stdout):
            lines = [l for l in stdout.splitlines() if not l.startswith("saved the model to ")]
            return [l for l in lines if not any(marker in l for marker in TIMING_MARKERS)]

        def losses(stdout):
            return re.findall(r"\bloss (\d+\.\d+)", stdout)

        first, second = self.train_result.stdout, result.stdout
        self.assertEqual(sample_lines(second), sample_lines(first))
        self.assertTrue(sample_lines(first))
        self.assertEqual(losses(second), losses(first))
        self.assertGreaterEqual(len(losses(first)), 5)
        self.assertEqual(comparable(second), comparable(first))
        with open(again, encoding="utf-8") as f:
            self.assertEqual(json.load(f)["state_dict"], self.ckpt_json["state_dict"])

    def test_loaded_checkpoint_prints_the_same_samples_as_the_run_that_saved_it(self):
        result = run_main(["--load", self.ckpt, "--num-samples", "4"], cwd=self.tmp)
        assert_ok(self, result)
        self.assertFalse([l for l in result.stdout.splitlines() if l.startswith("step ")])
        self.assertEqual(sample_lines(result.stdout), sample_lines(self.train_result.stdout))
        self.assertEqual(len(sample_lines(result.stdout)), 4)

    def test_loaded_checkpoint_with_steps_fine_tunes_it(self):
        saved = os.path.join(self.tmp, "tuned.json")
        result = run_main(["--load", self.ckpt, "--steps", "3", "--input", self.names, "--num-samples", "2",
                          "--save", saved], cwd=self.tmp)
        assert_ok(self, result)
        progress = [l for l in result.stdout.splitlines() if l.startswith("step ")]
        self.assertTrue(progress, result.stdout)
        self.assertTrue(progress[-1].startswith("step 3/3"), progress)
        self.assertEqual(len(sample_lines(result.stdout)), 2)
        config, chars, params, mode, ckpt = microgpt.load_checkpoint(saved)
        self.assertEqual(ckpt["config"], self.ckpt_json["config"])
        self.assertNotEqual(ckpt["state_dict"], self.ckpt_json["state_dict"])
        # the checkpoint counts every step the model has trained: 5 before, 3 now
        self.assertEqual(ckpt["training"]["steps"], self.ckpt_json["training"]["steps"] + 3)

    def test_training_options_without_training_are_refused_with_exit_2(self):
        """A loaded model only samples unless --steps says otherwise, so --input, --lr and
        --batch would be silently ignored: say so instead."""
        assert_refused(self, self.tmp, ["--load", self.ckpt, "--lr", "0.1"], ["--load", self.ckpt, "--batch", "2"],
                       ["--load", self.ckpt, "--input", self.names], ["--load", self.ckpt, "--steps", "0", "--lr", "0.1"])

    def test_diverging_training_stops_with_exit_2_and_saves_nothing(self):
        target = os.path.join(self.tmp, "diverged.json")
        result = run_main(["--input", self.names, "--steps", "5", "--lr", "1e100", "--save", target] + TINY,
                          cwd=self.tmp)
        context = f"\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        self.assertEqual(result.returncode, 2, context)
        self.assertEqual(len(result.stderr.splitlines()), 1, context)
        self.assertIn("diverged", result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertFalse(os.path.exists(target))
        self.assertEqual(temp_files(self.tmp), [])

    # --- bad checkpoints -------------------------------------------------------------------

    def test_damaged_checkpoints_are_refused_with_exit_2(self):
        def drop(key):
            def change(c):
                del c[key]
            return change

        def set_at(path, value):
            def change(c):
                target = c
                for key in path[:-1]:
                    target = target[key]
                target[path[-1]] = value
            return change

        wte = self.ckpt_json["state_dict"]["wte"]
        cases = {
            "not JSON": "this is not {json",
            "not UTF-8": b"\xff\xfe\x00{",
            "another format": {"format": "other"},
            "a JSON list": [self.ckpt_json],
            "wrong version": self.corrupted(set_at(["version"], 2)),
            "no config": self.corrupted(drop("config")),
            "no chars": self.corrupted(drop("chars")),
            "no state_dict": self.corrupted(drop("state_dict")),
            "wte missing a row": self.corrupted(set_at(["state_dict", "wte"], wte[:-1])),
            "wte row too short": self.corrupted(set_at(["state_dict", "wte", 0], wte[0][:-1])),
            "a weight that is a string": self.corrupted(set_at(["state_dict", "wte", 0, 0], "0.5")),
            "a weight that is NaN": self.corrupted(set_at(["state_dict", "wpe", 0, 0], float("nan"))),
            "n_embd not divisible by n_head": self.corrupted(set_at(["config", "n_head"], 3)),
        }
        paths = [os.path.join(self.tmp, "no-such-checkpoint.json")]
        for i, (what, content) in enumerate(cases.items()):
            paths.append(os.path.join(self.tmp, f"bad{i}-{what.replace(' ', '_')}.json"))
            if not isinstance(content, (bytes, str)):
                content = json.dumps(content)
            with open(paths[-1], "wb") as f:
                f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
        assert_refused(self, self.tmp, *[["--load", path] for path in paths])

    def test_checkpoint_weight_too_large_for_a_float_is_refused_with_exit_2(self):
        # JSON integers have no size limit; 10**400 is a valid JSON number but no float.
        ckpt = self.corrupted(lambda c: c["state_dict"]["wte"][0].__setitem__(0, 12345.5))
        text = json.dumps(ckpt)
        self.assertEqual(text.count("12345.5"), 1)
        path = write_text(self.tmp, "huge.json", text.replace("12345.5", "1" + "0" * 400))
        assert_refused(self, self.tmp, ["--load", path])

    def test_shape_flags_contradicting_the_checkpoint_are_refused_with_exit_2(self):
        # the checkpoint has n_layer 1, n_embd 8, n_head 2, block_size 8
        assert_refused(self, self.tmp, ["--load", self.ckpt, "--n-embd", "32"], ["--load", self.ckpt, "--block-size", "16"])

    def test_stream_flag_with_a_docs_checkpoint_is_refused_with_exit_2(self):
        assert_refused(self, self.tmp, ["--load", self.ckpt, "--stream"])

    def test_fine_tuning_on_characters_outside_the_checkpoint_vocabulary_is_refused_with_exit_2(self):
        data = write_text(self.tmp, "zoe.txt", "emma\nZo\u00eb\nava\n")
        [result] = assert_refused(self, self.tmp, ["--load", self.ckpt, "--steps", "2", "--input", data])
        self.assertIn("\u00eb", result.stderr)

    def test_save_into_a_missing_directory_is_refused_before_training(self):
        target = os.path.join(self.tmp, "no", "such", "dir", "model.json")
        assert_refused(self, self.tmp, ["--input", self.names, "--steps", "2", "--save", target] + TINY)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "no")))

    def test_failed_run_leaves_an_existing_save_target_unchanged(self):
        target = os.path.join(self.tmp, "model.json")
        shutil.copyfile(self.ckpt, target)
        names = write_text(self.tmp, "names.txt", "\n".join(NAMES) + "\n")
        # assert_refused checks that every file in self.tmp, the target included, is byte-identical
        assert_refused(self, self.tmp, ["--input", names, "--steps", "2", "--save", target, "--prompt", "Q"] + TINY,
                       ["--load", target, "--save", target, "--prompt", "emQ"])

    def test_stream_checkpoint_without_stream_start_is_sampled_or_refused_cleanly(self):
        # "stream_start" is an optional extra that load_checkpoint does not check; a stream
        # checkpoint without it (hand-made, or from another tool) must not crash the sampler.
        text = write_text(self.tmp, "bits.txt", "0110101101" * 5)
        ckpt = os.path.join(self.tmp, "stream.json")
        trained = run_main(["--input", text, "--stream", "--steps", "2", "--num-samples", "0", "--save", ckpt,
                           "--n-embd", "8", "--n-head", "2", "--block-size", "3"], cwd=self.tmp)
        assert_ok(self, trained)
        with open(ckpt, encoding="utf-8") as f:
            content = json.load(f)
        content.pop("stream_start", None)
        write_text(self.tmp, "stream.json", json.dumps(content))
        result = run_main(["--load", ckpt, "--length", "10"], cwd=self.tmp)
        context = f"\nexit: {result.returncode}\nstderr:\n{result.stderr}"
        self.assertNotIn("Traceback", result.stderr, context)
        self.assertIn(result.returncode, (0, 2), context)
        if result.returncode == 2:
            self.assertEqual(len(result.stderr.splitlines()), 1, context)


class SamplingTest(TempDirTestCase):

    def test_help_exits_0_and_mentions_every_flag(self):
        result = run_main(["--help"], cwd=self.tmp)
        assert_ok(self, result)
        for flag in ("--input", "--stream", "--steps", "--n-layer", "--n-embd", "--n-head", "--block-size",
                     "--batch", "--lr", "--seed", "--temperature", "--num-samples", "--length", "--prompt",
                     "--save", "--load", "--chain", "--explain"):
            self.assertRegex(result.stdout, r"(?m)^\s+" + re.escape(flag) + r"\b", flag)

    def test_prompted_samples_all_start_with_the_prompt(self):
        result = run_main(["--input", self.names, "--steps", "2", "--num-samples", "5", "--prompt", "el"] + TINY,
                          cwd=self.tmp)
        assert_ok(self, result)
        samples = sample_lines(result.stdout)
        self.assertEqual(len(samples), 5)
        for sample in samples:
            self.assertTrue(sample.startswith("el"), sample)

    def test_num_samples_0_prints_no_samples(self):
        result = run_main(["--input", self.names, "--steps", "2", "--num-samples", "0"] + TINY, cwd=self.tmp)
        assert_ok(self, result)
        self.assertTrue([l for l in result.stdout.splitlines() if l.startswith("step ")])
        self.assertEqual(sample_lines(result.stdout), [])
        self.assertNotIn("sample", result.stdout)

    def test_tiny_positive_temperature_samples_greedily_or_is_refused_cleanly(self):
        # 1e-320 passes the "positive number" check, but logits / 1e-320 overflow to inf. As
        # the temperature goes to 0 sampling becomes greedy, so the samples should be those of
        # a small but harmless temperature such as 1e-6 (or the setting should be refused).
        base = ["--input", self.names, "--steps", "1", "--num-samples", "3"] + TINY
        greedy, tiny = (run_main(base + ["--temperature", t], self.tmp) for t in ("1e-6", "1e-320"))
        assert_ok(self, greedy)
        context = f"\nexit: {tiny.returncode}\nstdout:\n{tiny.stdout}\nstderr:\n{tiny.stderr}"
        self.assertNotIn("Traceback", tiny.stderr, context)
        self.assertIn(tiny.returncode, (0, 2), context)
        if tiny.returncode == 2:
            self.assertEqual(len(tiny.stderr.splitlines()), 1, context)
        else:
            self.assertEqual(sample_lines(tiny.stdout), sample_lines(greedy.stdout), context)
            self.assertEqual(len(sample_lines(greedy.stdout)), 3)


@unittest.skipIf(os.name == "nt" or not hasattr(signal, "SIGINT"), "needs POSIX signals")
class CtrlCTest(TempDirTestCase):

    def test_ctrl_c_during_training_saves_a_loadable_checkpoint_and_exits_130(self):
        ckpt = os.path.join(self.tmp, "model.json")
        env = dict(os.environ, PYTHONIOENCODING="utf-8")
        proc = subprocess.Popen(MICROGPT_COMMAND + ["--input", self.names, "--steps", "100000",
                                 "--num-samples", "0", "--save", ckpt] + TINY,
                                cwd=self.tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, encoding="utf-8")
        watchdog = threading.Timer(120, proc.kill)     # never hang the suite
        watchdog.start()
        try:
            seen = []
            while True:
                line = proc.stdout.readline()
                if not line:
                    break
                seen.append(line)
                if line.startswith("step "):
                    break
            self.assertTrue(seen and seen[-1].startswith("step "), "no progress line:\n" + "".join(seen))
            proc.send_signal(signal.SIGINT)
            stdout = "".join(seen) + proc.stdout.read()
            stderr = proc.stderr.read()
            returncode = proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        context = f"\nexit: {returncode}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        self.assertEqual(returncode, 130, context)
        self.assertNotIn("Traceback", stdout + stderr, context)
        self.assertIn("interrupted", stderr.strip().splitlines()[-1], context)
        self.assertIn(f"saved the model to {ckpt}", stdout, context)
        config, chars, params, mode, saved = microgpt.load_checkpoint(ckpt)
        self.assertEqual((config.n_embd, config.n_head, config.block_size, mode), (8, 2, 8, "docs"))
        self.assertTrue(1 <= saved["training"]["steps"] < 100000, saved["training"])
        self.assertEqual(temp_files(self.tmp), [])


if __name__ == "__main__":
    unittest.main()
