"""What a second tester found about saving and loading: a second Ctrl-C as a stopped run
ends (the process killed by Python's own shutdown, or a traceback), --resume's refusal of
another data file, and hand-edited histories that made the page print nonsense."""
import json
import os
import random
import signal
import subprocess
import sys
import time
import unittest
from unittest import mock

from tests.support import (MICROGPT_COMMAND, MICROGPT_PATH, TempDirTestCase, microgpt, run_main)

TINY_NAMES = ["--n-embd", "8", "--n-head", "2", "--block-size", "8", "--num-samples", "0"]
SLOW = os.environ.get("MICROGPT_SLOW") == "1"


@unittest.skipUnless(hasattr(signal, "pthread_sigmask") and os.name == "posix", "needs POSIX signals")
class ASecondSignalAsTheRunEnds(TempDirTestCase):

    def test_a_signal_while_main_puts_the_handlers_back_exits_130_with_one_line(self):
        # The stopped run has saved and run() has returned 130; the second Ctrl-C comes while
        # main() restores the handlers it replaced: it once escaped main() as a traceback.
        install = microgpt.StopSignals.install

        def install_with_a_late_signal(stop):
            restore = install(stop)

            def signal_then_restore():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):          # until the handler has run
                    if getattr(stop, "late", None) or stop.stopping:
                        break
                    time.sleep(0.001)
                return restore()
            return signal_then_restore
        args = ["--input", self.names, "--steps", "3", "--save", "m.json"] + TINY_NAMES
        with mock.patch.object(microgpt.StopSignals, "install", install_with_a_late_signal), \
                mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": "1"}):
            try:
                result = run_main(args, self.tmp)
            except KeyboardInterrupt as e:
                self.fail(f"the signal escaped main(): {e!r}")
        self.assertEqual(result.returncode, 130, result.stderr)
        self.assertTrue(result.stderr.rstrip().endswith("microgpt: interrupted by SIGINT"), result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertIn("saved the model to m.json", result.stdout)

    def test_a_signal_held_at_the_very_end_exits_130_with_one_line(self):
        # Python's shutdown puts back the default action of SIGINT (a silent kill, -2) while it
        # frees the model; exit_program leaves before that and says a signal that came.
        code = ("import os, signal, sys; sys.path.insert(0, sys.argv[1]); import microgpt; "
                "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}); os.kill(os.getpid(), signal.SIGINT); "
                "print('done', flush=True); microgpt.exit_program(0)")
        result = subprocess.run([sys.executable, "-c", code, os.path.dirname(MICROGPT_PATH)],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 130, result.stderr)
        self.assertEqual(result.stdout, "done\n")
        self.assertEqual(result.stderr, "\nmicrogpt: interrupted by SIGINT\n")

    @unittest.skipUnless(SLOW, "MICROGPT_SLOW=1: many real processes")
    def test_a_second_ctrl_c_just_after_a_stopped_run_saved_always_exits_130(self):
        # The tester's trials: a second SIGINT a few milliseconds after the stopped run's
        # save killed the process by SIGINT (returncode -2) or showed a traceback.
        rng = random.Random(1)
        env = dict(os.environ, PYTHONIOENCODING="utf-8", MICROGPT_STOP_AFTER_STEP="2")
        for trial in range(20):
            with subprocess.Popen(MICROGPT_COMMAND + ["--input", self.names, "--steps", "5", "--save",
                                   "m.json", "--num-samples", "0"], cwd=self.tmp, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, encoding="utf-8") as child:
                for line in child.stdout:
                    if "saved the model" in line:
                        break
                time.sleep(rng.uniform(0, 0.01))
                child.send_signal(signal.SIGINT)
                out, err = child.communicate(timeout=60)
            with self.subTest(trial=trial):
                self.assertEqual(child.returncode, 130, err)
                self.assertNotIn("Traceback", err)
                self.assertTrue(microgpt.is_checkpoint(os.path.join(self.tmp, "m.json")))


def stopped_run(test, steps=4):
    """A run of `steps` steps stopped after its first (a real SIGINT), saved to s.json."""
    with mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": "1"}):
        result = run_main(["--input", test.names, "--steps", str(steps), "--save", "s.json"] + TINY_NAMES, test.tmp)
    test.assertEqual(result.returncode, 130, result.stderr)
    return os.path.join(test.tmp, "s.json")


@unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "needs POSIX signals")
class ResumeSaysWhichTextItWasTrainedOn(TempDirTestCase):

    def test_another_data_file_is_named_as_another_not_as_changed(self):
        stopped_run(self)
        with open(os.path.join(self.tmp, "two.txt"), "w", encoding="utf-8") as f:
            f.write("anna\nbob\n")
        result = run_main(["--resume", "s.json", "--input", "two.txt"], self.tmp)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertNotIn("changed", result.stderr)
        self.assertIn(f"(that was {os.path.abspath(self.names)})", result.stderr)

    def test_the_same_data_file_edited_since_is_said_to_have_changed(self):
        stopped_run(self)
        with open(self.names, "a", encoding="utf-8") as f:
            f.write("emma\n")
        result = run_main(["--resume", "s.json"], self.tmp)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("(it changed since)", result.stderr)


class AHistoryThatDoesNotAddUpIsNotDrawn(TempDirTestCase):
    """Hand-edited histories: the page of the loaded model says it has no loss curve, as for
    a checkpoint that keeps none, instead of drawing numbers no run recorded."""

    @classmethod
    def setUpClass(cls):
        cls._home = TempDirTestCase()
        cls._home.setUp()
        result = run_main(["--input", cls._home.names, "--steps", "6", "--save", "m.json"] + TINY_NAMES, cls._home.tmp)
        assert result.returncode == 0, result.stderr
        with open(os.path.join(cls._home.tmp, "m.json"), encoding="utf-8") as f:
            cls.saved = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls._home.doCleanups()

    def page_of(self, edit):
        ckpt = json.loads(json.dumps(self.saved))
        edit(ckpt["history"])
        with open(os.path.join(self.tmp, "e.json"), "w", encoding="utf-8") as f:
            json.dump(ckpt, f)
        result = run_main(["--load", "e.json", "--report", "r.html", "--num-samples", "0"], self.tmp)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        with open(os.path.join(self.tmp, "r.html"), encoding="utf-8") as f:
            return f.read()

    def edited(self, edit):
        ckpt = json.loads(json.dumps(self.saved))
        edit(ckpt["history"])
        return ckpt

    def assert_absent(self, edit):
        self.assertEqual(microgpt.remembered_history(self.edited(edit)), {})

    def test_the_untouched_history_is_drawn(self):
        self.assertEqual(len(microgpt.remembered_history(self.saved)["losses"]), 6)
        self.assertNotIn("so there is no loss curve", self.page_of(lambda h: None))

    def test_a_page_with_a_loss_of_minus_1e308_says_there_is_no_loss_curve(self):
        page = self.page_of(lambda h: h["losses"].__setitem__(2, -1e308))
        self.assertIn("so there is no loss curve", page)
        self.assertNotIn("0" * 100, page)

    def test_a_negative_or_huge_loss_makes_the_history_absent(self):
        self.assert_absent(lambda h: h["losses"].__setitem__(2, -0.1))
        self.assert_absent(lambda h: h["losses"].__setitem__(2, 1e300))

    def test_fewer_losses_than_the_run_took_steps_make_the_history_absent(self):
        self.assert_absent(lambda h: h.update(losses=h["losses"][:3]))
        self.assert_absent(lambda h: h.update(losses=h["losses"] * 2))

    def test_a_validation_point_or_sample_outside_the_run_makes_the_history_absent(self):
        self.assert_absent(lambda h: h["val_points"].append([1000, 2.0]))
        self.assert_absent(lambda h: h["val_points"].append([3, -0.5]))
        self.assert_absent(lambda h: h["snapshots"].append({"step": 7, "samples": ["x"]}))

    @unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "needs POSIX signals")
    def test_resume_refuses_a_stopped_run_whose_history_holds_a_negative_loss(self):
        path = stopped_run(self)
        with open(path, encoding="utf-8") as f:
            ckpt = json.load(f)
        ckpt["history"]["losses"][0] = -1e308
        with open(path, "w", encoding="utf-8") as f:
            json.dump(ckpt, f)
        result = run_main(["--resume", "s.json"], self.tmp)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn("does not add up", result.stderr)

if __name__ == "__main__":
    unittest.main()
