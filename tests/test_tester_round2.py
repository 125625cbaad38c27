"""What a tester's second round found about stopping and saving: a second Ctrl-C during a
save, a stop signal during --chat's stages, --resume of a chat model, and the line that says
where a model was saved when stdout is gone."""
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest
from unittest import mock

from tests.support import (MICROGPT_COMMAND, NAMES, REPO, TempDirTestCase, assert_ok, assert_refused, microgpt,
                           run_main, write_text)
from tests.test_chat import TINY, TINY_PLAN, tiny_chat_model

TINY_NAMES = ["--n-embd", "8", "--n-head", "2", "--block-size", "8"]


def checkpoint(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_stopped(args, cwd, step, stdin=""):
    """run_main, the run sending itself a SIGINT after `step` (MICROGPT_STOP_AFTER_STEP)."""
    with mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": str(step)}):
        return run_main(args, cwd, stdin=stdin)


SLOW = bool(os.environ.get("MICROGPT_SLOW"))


@unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "needs POSIX signals")
class SecondSignalDuringSave(TempDirTestCase):

    def test_a_second_ctrl_c_in_the_middle_of_the_save_waits_for_the_file_then_exits_130(self):
        # In this process, with a tiny model: the second Ctrl-C arrives while the save judges
        # the model it is about to replace, which the old code let cut the save short.
        names = write_text(self.tmp, "names.txt", "".join(f"{n}\n" for n in NAMES))
        assert_ok(self, run_main(["--input", names, "--steps", "1", "--save", "m.json", "--num-samples", "0"]
                                 + TINY_NAMES, self.tmp))
        judge = microgpt.judge_before_replacing

        def judge_hit_by_a_second_ctrl_c(*args, **kwargs):
            # To this thread: the command line has no other, but a test runner may have
            # some, and a signal sent to the process could land in one that does not hold it.
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            time.sleep(0.05)              # time for a handler to run, if the signal is not held
            return judge(*args, **kwargs)
        with mock.patch.object(microgpt, "judge_before_replacing", judge_hit_by_a_second_ctrl_c):
            result = run_stopped(["--input", names, "--load", "m.json", "--steps", "5", "--save", "m.json",
                                  "--num-samples", "0"], self.tmp, 2)
        context = f"\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        self.assertEqual(result.returncode, 130, context)
        self.assertIn("saved the model to m.json", result.stdout, context)
        saved = microgpt.load_checkpoint(os.path.join(self.tmp, "m.json"))[4]
        self.assertEqual(saved["training"]["steps"], 1 + 2, context)

    @unittest.skipUnless(SLOW, "a real process and a default-size model: set MICROGPT_SLOW=1")
    def test_a_second_ctrl_c_after_saving_to_waits_for_the_file_then_exits_130(self):
        # An in-place fine-tune of a default-size model: replacing m.json first judges the
        # model on 200 held-out names (most of a second), the time a second Ctrl-C used to
        # cut the save short in.
        with open(os.path.join(REPO, "names.txt"), encoding="utf-8") as f:
            write_text(self.tmp, "many.txt", "".join(f.readlines()[:2000]))
        assert_ok(self, run_main(["--input", "many.txt", "--steps", "1", "--save", "m.json", "--num-samples", "0"],
                                 self.tmp))
        env = dict(os.environ, PYTHONIOENCODING="utf-8", MICROGPT_STOP_AFTER_STEP="2")
        with subprocess.Popen(MICROGPT_COMMAND + ["--input", "many.txt", "--load", "m.json", "--steps",
                               "5", "--save", "m.json", "--num-samples", "0"], cwd=self.tmp, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8") as child:
            stderr = []
            for line in child.stderr:
                stderr.append(line)
                if "saving to m.json" in line:
                    child.send_signal(signal.SIGINT)      # the second one
                    break
            stderr += child.stderr.read()
            stdout = child.stdout.read()
            child.wait(timeout=60)
        context = f"\nstdout:\n{stdout}\nstderr:\n{''.join(stderr)}"
        self.assertEqual(child.returncode, 130, context)
        self.assertIn("interrupted by SIGINT after 2 of 5 steps; saving to m.json", "".join(stderr), context)
        self.assertIn("saved the model to m.json", stdout, context)
        self.assertNotIn("Traceback", stdout + "".join(stderr))
        saved = microgpt.load_checkpoint(os.path.join(self.tmp, "m.json"))[4]
        self.assertEqual(saved["training"]["steps"], 1 + 2, context)      # the 1 it had and the 2 of this run
        self.assertEqual(len(saved["history"]["losses"]), 2)
        self.assertFalse([n for n in os.listdir(self.tmp) if n.startswith(".microgpt-")], "a temporary file was left")


class ChatStoppedMidStage(TempDirTestCase):

    def test_a_stop_signal_in_each_chat_stage_saves_that_stage_as_it_is_and_it_loads(self):
        plan = functools.partial(microgpt.ChatPlan, **TINY_PLAN)
        with mock.patch.object(microgpt, "ChatPlan", plan):
            pre = run_stopped(["--chat", "--input", "names.txt", "--save", "c.json"], self.tmp, 5)
            sft = run_stopped(["--load", "c-pretrained.json", "--chat", "--input", "names.txt", "--save", "c.json"],
                              self.tmp, 3)
            chat = run_main(["--load", "c-sft.json", "--chat"], self.tmp, stdin="a name starting with e\n")
            rl = run_stopped(["--load", "c-sft.json", "--chat", "--input", "names.txt", "--save", "c.json"],
                             self.tmp, 1)
        for result, what, done, total, path in ((pre, "pretraining", 5, TINY_PLAN["pretrain_steps"], "c-pretrained.json"),
                                                (sft, "fine-tuning", 3, TINY_PLAN["sft_steps"], "c-sft.json"),
                                                (rl, "reinforcement learning", 1, TINY_PLAN["rl_steps"], "c.json")):
            with self.subTest(what=what):
                context = f"\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
                self.assertEqual(result.returncode, 130, context)
                self.assertIn(f"interrupted by SIGINT after {done} of {total} steps of {what}; saving the model so "
                              f"far to {path} (its {what} is not finished)", result.stderr, context)
                self.assertIn(f"model to {path}", result.stdout, context)
                self.assertNotIn("Traceback", result.stdout + result.stderr)
                self.assertNotIn("report card", result.stdout)
                self.assertEqual(checkpoint(os.path.join(self.tmp, path))["stopped"], {"steps": done, "of": total})
        # Each run stopped in its stage: the next stage's file was not written by it.
        self.assertNotIn("c-sft.json", pre.stdout)
        self.assertNotIn("saved the RL", sft.stdout)
        self.assertEqual(microgpt.load_checkpoint(os.path.join(self.tmp, "c-sft.json"))[4]["stage"], "SFT")
        assert_ok(self, chat)
        self.assertIn("the SFT stage's assistant from c-sft.json (stopped after 3 of its 6 steps)", chat.stdout)
        self.assertIn("> a name starting with e", chat.stdout)


class ResumeOfAChatModel(TempDirTestCase):

    def test_resume_of_a_chat_model_says_it_is_one_and_its_advice_works(self):
        params, chat_chars = tiny_chat_model()
        microgpt.save_checkpoint(os.path.join(self.tmp, "chat.json"), params, TINY, chat_chars, "chat",
                                 {"stage": "RL"})
        [refused] = assert_refused(self, self.tmp, ["--resume", "chat.json"])
        self.assertIn("chat.json is a chat model", refused.stderr)
        self.assertNotIn("older microgpt", refused.stderr)
        self.assertIn("--load chat.json --chat", refused.stderr)
        assert_ok(self, run_main(["--load", "chat.json", "--chat"], self.tmp, stdin="a name ending with a\n"))


@unittest.skipUnless(os.name == "posix", "needs a pipe whose reader is gone")
class SavedLineWhenStdoutIsGone(TempDirTestCase):

    def test_saved_the_model_to_goes_to_stderr_when_stdout_is_gone(self):
        read_end, write_end = os.pipe()
        os.close(read_end)                       # as `| head -1` after its line: nobody reads
        try:
            result = subprocess.run(MICROGPT_COMMAND + ["--input", "names.txt", "--steps", "2", "--save",
                                     "p.json"] + TINY_NAMES, cwd=self.tmp, stdout=write_end, stderr=subprocess.PIPE,
                                    text=True, encoding="utf-8", timeout=60)
        finally:
            os.close(write_end)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "p.json")))
        self.assertEqual(result.stderr.strip(), "saved the model to p.json")


if __name__ == "__main__":
    unittest.main()
