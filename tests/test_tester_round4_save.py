"""What a fourth tester found about stopping: a model lost to a second Ctrl-C during the
score check after training, a stopped --report run that never said its page was not written,
a stopped --chat stage with no word on how to redo it."""
import dataclasses
import functools
import os
import shlex
import signal
import shutil
import subprocess
import sys
import unittest
from unittest import mock

from tests.support import TempDirTestCase, microgpt, run_main

TINY_NAMES = ["--n-embd", "8", "--n-head", "2", "--block-size", "8", "--num-samples", "0"]
# How a stopped --chat stage says to run microgpt.py again from a test's scratch directory
RUN_AGAIN = f"{shlex.quote(os.path.basename(sys.executable))} {shlex.quote(os.path.abspath(microgpt.__file__))}"


def signals_during_the_score_check(calls):
    """A check_finite_scores that sends this process a SIGINT as it computes each of its
    windows after the first, as a learner pressing Ctrl-C again and again would (a second one
    once killed the run); `calls` counts the windows it computed."""
    check, logits = microgpt.check_finite_scores, microgpt.logits_at_every_position

    def window(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            os.kill(os.getpid(), signal.SIGINT)     # its handler runs before the next line
        return logits(*args, **kwargs)

    def checked(*args, **kwargs):
        with mock.patch.object(microgpt, "logits_at_every_position", window):
            return check(*args, **kwargs)
    return checked


@unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "needs POSIX signals")
class AStopDuringTheScoreCheckSavesAtOnce(TempDirTestCase):

    def test_ctrl_c_during_a_long_check_cuts_it_short_saves_exits_130_and_load_checks_it_all(self):
        calls = []
        # --bpe 40: a vocabulary of about 60 tokens, so the check has several windows of 8; it is
        # taken for a long one (a big --bpe vocabulary's), which a stop signal cuts short
        args = ["--input", self.names, "--steps", "2", "--bpe", "40", "--save", "m.json"] + TINY_NAMES
        with mock.patch.object(microgpt, "check_finite_scores", signals_during_the_score_check(calls)), \
                mock.patch.object(microgpt, "score_check_is_quick", lambda *a: False):
            result = run_main(args, self.tmp)
        self.assertEqual(result.returncode, 130, result.stderr)
        self.assertTrue(microgpt.is_checkpoint(os.path.join(self.tmp, "m.json")), result.stderr)
        self.assertIn("saved the model to m.json", result.stdout)
        self.assertEqual(len(calls), 2, "the check went on after the stop signal")
        self.assertIn("microgpt: stopping now: the model's score check is cut short to save it", result.stderr)
        self.assertIn("the model's scores were not all checked (the run was stopped); --load checks them again",
                      result.stderr)
        self.assertIn("interrupted by SIGINT after 2 of 2 steps; saving to m.json", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        # saved with its check cut short: --load checks it all before it samples
        checked = []
        check = microgpt.check_finite_scores
        with mock.patch.object(microgpt, "check_finite_scores", lambda *a, **k: checked.append(check(*a, **k))):
            result = run_main(["--load", "m.json", "--num-samples", "1"], self.tmp)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(checked, [True])


@unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "needs POSIX signals")
class AStoppedChatStageSaysHowToRedoIt(TempDirTestCase):

    def test_a_stopped_sft_stage_names_the_pretrained_file_and_that_command_runs(self):
        from tests.test_chat import TINY_PLAN
        # 4 pretraining steps, so the stop after step 5 comes in SFT (6 steps), in the whole pipeline
        plan = functools.partial(microgpt.ChatPlan, **dict(TINY_PLAN, pretrain_steps=4))
        with mock.patch.object(microgpt, "ChatPlan", plan), \
                mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": "5"}):
            stopped = run_main(["--chat", "--input", "names.txt", "--save", "c.json"], self.tmp)
        self.assertEqual(stopped.returncode, 130, stopped.stderr)
        self.assertIn("steps of fine-tuning; saving the model so far to c-sft.json", stopped.stderr)
        # the command as this run was started: the interpreter's own name (python3 where that is
        # all there is), and microgpt.py's path, since the run's directory is not the script's
        hint = f"to redo the fine-tuning from its start: {RUN_AGAIN} "
        self.assertIn(hint + "--load c-pretrained.json --chat --save c.json --input names.txt\n", stopped.stderr)
        options = shlex.split(stopped.stderr.split(hint)[1].splitlines()[0])
        with mock.patch.object(microgpt, "ChatPlan", plan):
            redone = run_main(options, self.tmp)
        self.assertEqual(redone.returncode, 0, redone.stderr)
        self.assertIn("--- stage 2", redone.stdout)
        self.assertEqual(microgpt.load_checkpoint(os.path.join(self.tmp, "c-sft.json"))[4].get("stopped"), None)
        self.assertIn("report card", redone.stdout)

    def test_each_stopped_chat_stage_names_the_file_it_started_from_and_the_run_options(self):
        from tests.test_chat import TINY_PLAN
        plan = functools.partial(microgpt.ChatPlan, **TINY_PLAN)
        options = ["--chat", "--input", "names.txt", "--save", "c.json", "--seed", "7"]
        runs = ((["--chat"], 7, "pretraining", ""),        # stopped in pretraining (20 steps)
                (["--load", "c-pretrained.json", "--chat"], 1, "fine-tuning", "--load c-pretrained.json "),
                (["--load", "c-sft.json", "--chat"], 1, "reinforcement learning", "--load c-sft.json "))
        for start, step, what, before in runs:
            with self.subTest(what=what), mock.patch.object(microgpt, "ChatPlan", plan), \
                    mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": str(step)}):
                stopped = run_main(start + options[1:], self.tmp)
                self.assertEqual(stopped.returncode, 130, stopped.stderr)
                self.assertIn(f"steps of {what}; saving the model so far", stopped.stderr)
                self.assertIn(f"to redo the {what} from its start: {RUN_AGAIN} {before}--chat --save c.json "
                              "--input names.txt --seed 7\n", stopped.stderr)

@unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "needs POSIX signals")
class AChatRunsPageIsNeitherLostNorForgotten(TempDirTestCase):
    """The seventh tester: a --chat --report page whose path was taken during the run was
    lost with no word; a stopped stage's redo command dropped --report and never said the
    page was not written; its lines printed a file name's control characters raw."""

    def plan(self, **changes):
        """ChatPlan with test_chat's tiny sizes as its defaults: a class, as the page's writer
        checks isinstance(plan, ChatPlan)."""
        from tests.test_chat import TINY_PLAN
        sizes = dict(TINY_PLAN, **changes)
        return dataclasses.make_dataclass("TinyPlan", [(k, type(v), dataclasses.field(default=v))
                                                       for k, v in sizes.items()], bases=(microgpt.ChatPlan,))

    def run_while_a_file_appears(self, name, content):
        """The tiny pipeline with --save c.json --report c.html, the user's own file `name`
        appearing once the card is printed: after the up-front checks, before the last save."""
        card = microgpt.print_card

        def card_then_a_file_appears(*args):
            card(*args)
            with open(os.path.join(self.tmp, name), "w", encoding="utf-8") as f:
                f.write(content)
        with mock.patch.object(microgpt, "ChatPlan", self.plan()), \
                mock.patch.object(microgpt, "print_card", card_then_a_file_appears):
            return run_main(["--chat", "--input", "names.txt", "--save", "c.json", "--report", "c.html"], self.tmp)

    def test_a_page_whose_path_is_taken_during_the_run_is_written_to_a_rescue_file(self):
        result = self.run_while_a_file_appears("c.html", "FOREIGN")
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        with open(os.path.join(self.tmp, "c.html"), encoding="utf-8") as f:
            self.assertEqual(f.read(), "FOREIGN")
        [rescued] = [n for n in os.listdir(self.tmp) if n.startswith("microgpt-rescued-")]
        self.assertIn(f"the page was written to {os.path.join(self.tmp, rescued)} instead", result.stderr)
        self.assertTrue(microgpt.is_microgpt_report(os.path.join(self.tmp, rescued)))
        self.assertTrue(microgpt.is_checkpoint(os.path.join(self.tmp, "c.json")))       # the model is saved

    def test_a_rescued_chat_model_says_its_page_was_not_written_and_how_to_draw_it(self):
        result = self.run_while_a_file_appears("c.json", "PRECIOUS")
        self.assertEqual(result.returncode, 2, result.stderr)
        [rescued] = [n for n in os.listdir(self.tmp) if n.startswith("microgpt-rescued-")]
        self.assertIn(f"the page c.html was not written: `--load {os.path.join(self.tmp, rescued)} --chat --report "
                      "PAGE.html` draws it", result.stderr)

    def test_a_stopped_stage_keeps_report_in_its_redo_command_and_says_the_page_was_not_written(self):
        with mock.patch.object(microgpt, "ChatPlan", self.plan(pretrain_steps=4)), \
                mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": "5"}):
            stopped = run_main(["--chat", "--input", "names.txt", "--save", "c.json", "--report", "c.html"], self.tmp)
        self.assertEqual(stopped.returncode, 130, stopped.stderr)
        self.assertIn("microgpt: the page c.html was not written (the run was stopped); the command below writes "
                      "it when its pipeline is done\n", stopped.stderr)
        self.assertIn(f"to redo the fine-tuning from its start: {RUN_AGAIN} --load c-pretrained.json --chat --save "
                      "c.json --input names.txt --report c.html\n", stopped.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "c.html")))

    def test_a_stopped_stages_lines_escape_control_characters_in_file_names(self):
        name = "z\x1b[1m.json"
        with mock.patch.object(microgpt, "ChatPlan", self.plan(pretrain_steps=4)), \
                mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": "5"}):
            stopped = run_main(["--chat", "--input", "names.txt", "--save", name], self.tmp)
        self.assertEqual(stopped.returncode, 130, stopped.stderr)
        self.assertNotIn("\x1b", stopped.stdout + stopped.stderr)
        self.assertIn("saved the pretrained model to z\\x1b[1m-pretrained.json", stopped.stdout)
        self.assertIn("saving the model so far to z\\x1b[1m-sft.json", stopped.stderr)
        self.assertIn("--save $'z\\x1b[1m.json'", stopped.stderr)      # bash's quoting: it pastes back

    @unittest.skipUnless(shutil.which("bash"), "needs bash")
    def test_a_redo_commands_quoted_words_paste_back_into_bash_as_the_same_words(self):
        # the eighth tester: 'n\x1b[31mred...' pasted back named a file with backslashes
        for word in ["n\x1b[31mred\u202eevil.txt", "it's\x07 a\\b", "plain name", "\u00e9\u200b", "-x"]:
            with self.subTest(word=word):
                quoted = microgpt.shell_word(word)
                self.assertTrue(quoted.isprintable(), quoted)
                shell = subprocess.run(["bash", "-c", "printf %s " + quoted], capture_output=True)
                self.assertEqual(shell.stdout.decode("utf-8"), word)

    def test_a_stop_between_two_stages_saves_no_stage_file_with_no_steps(self):
        # the eighth tester: a stop during the evaluation after pretraining wrote an "SFT"
        # model of 0 fine-tuning steps; now the pretrained file, saved, is where to go on from
        stage = microgpt.sft_stage

        def stopped_before_its_first_step(card, plan, stop, *args):
            stop.signum = signal.SIGTERM
            return stage(card, plan, stop, *args)
        with mock.patch.object(microgpt, "ChatPlan", self.plan()), \
                mock.patch.object(microgpt, "sft_stage", stopped_before_its_first_step):
            stopped = run_main(["--chat", "--input", "names.txt", "--save", "v.json", "--report", "v.html"], self.tmp)
        self.assertEqual(stopped.returncode, 143, stopped.stderr)
        self.assertIn("interrupted by SIGTERM before the first step of fine-tuning: nothing new to save",
                      stopped.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "v-sft.json")))
        self.assertTrue(microgpt.is_checkpoint(os.path.join(self.tmp, "v-pretrained.json")))
        self.assertIn(f"to redo the fine-tuning from its start: {RUN_AGAIN} --load v-pretrained.json", stopped.stderr)
        self.assertIn("the page v.html was not written", stopped.stderr)

    def test_save_that_would_write_the_loaded_model_is_refused_before_anything(self):
        # the ninth tester: --load s.json --chat --save s.json replaced the SFT stage it resumed,
        # and the redo command it printed could not run
        from tests.test_server import save_chat_model
        save_chat_model(os.path.join(self.tmp, "s.json"))
        with open(os.path.join(self.tmp, "s.json"), encoding="utf-8") as f:
            before = f.read()
        for save in ("s.json", "./s.json"):
            with self.subTest(save=save):
                result = run_main(["--load", "s.json", "--chat", "--save", save], self.tmp)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
                self.assertIn("the model --load starts from: it would be replaced", result.stderr)
        with open(os.path.join(self.tmp, "s.json"), encoding="utf-8") as f:
            self.assertEqual(f.read(), before)

    def test_a_stopped_chat_run_without_save_says_its_page_was_not_written(self):
        with mock.patch.object(microgpt, "ChatPlan", self.plan(pretrain_steps=4)), \
                mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": "2"}):
            stopped = run_main(["--chat", "--input", "names.txt", "--report", "p.html"], self.tmp)
        self.assertEqual(stopped.returncode, 130, stopped.stderr)
        self.assertIn("microgpt: the page p.html was not written (the run was stopped)", stopped.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "p.html")))

    def test_a_loaded_chat_models_report_path_taken_by_a_foreign_file_is_refused_before_anything(self):
        microgpt_chat = os.path.join(self.tmp, "chat.json")
        from tests.test_server import save_chat_model
        save_chat_model(microgpt_chat)
        with open(os.path.join(self.tmp, "victim.txt"), "w", encoding="utf-8") as f:
            f.write("MINE")
        result = run_main(["--load", "chat.json", "--chat", "--report", "victim.txt"], self.tmp)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(result.stdout, "")                       # not even the model: line
        self.assertFalse([n for n in os.listdir(self.tmp) if n.startswith("microgpt-rescued-")])


@unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "needs POSIX signals")
class AStoppedReportRunSaysHowToMakeItsPage(TempDirTestCase):

    def test_a_stopped_run_with_report_says_the_page_was_not_written_and_its_resume_writes_it(self):
        args = ["--input", self.names, "--steps", "3", "--save", "s.json", "--report", "s.html"] + TINY_NAMES
        with mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": "1"}):
            stopped = run_main(args, self.tmp)
        self.assertEqual(stopped.returncode, 130, stopped.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "s.html")))
        self.assertIn("microgpt: the page s.html was not written (the run was stopped); `--resume s.json --report "
                      "s.html` finishes the run and writes it, `--load s.json --report s.html` draws the model as "
                      "it is now\n", stopped.stderr)
        resumed = run_main(["--resume", "s.json", "--report", "s.html"], self.tmp)
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        self.assertIn("wrote s.html", resumed.stdout)
        self.assertTrue(microgpt.is_microgpt_report(os.path.join(self.tmp, "s.html")))

    def test_a_stop_after_the_save_says_load_writes_the_page(self):
        # The model is saved; Ctrl-C during the samples ends the run at once, before the page.
        samples = microgpt.print_samples

        def interrupted(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            return samples(*args, **kwargs)
        args = ["--input", self.names, "--steps", "2", "--save", "s.json", "--report", "s.html"] + TINY_NAMES
        with mock.patch.object(microgpt, "print_samples", interrupted):
            stopped = run_main(args, self.tmp)
        self.assertEqual(stopped.returncode, 130, stopped.stderr)
        self.assertIn("saved the model to s.json", stopped.stdout)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "s.html")))
        self.assertIn("microgpt: interrupted by SIGINT\nmicrogpt: the page s.html was not written (the run was "
                      "stopped after saving its model); `--load s.json --report s.html` writes it\n", stopped.stderr)
        made = run_main(["--load", "s.json", "--report", "s.html", "--num-samples", "0"], self.tmp)
        self.assertEqual(made.returncode, 0, made.stderr)
        self.assertTrue(microgpt.is_microgpt_report(os.path.join(self.tmp, "s.html")))


@unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "needs POSIX signals")
class AStopDuringTheLastValidationSavesAtOnce(TempDirTestCase):

    def test_ctrl_c_during_the_last_steps_full_validation_cuts_it_short_and_saves(self):
        # --save records the last step's validation on every held-out sequence (seconds with a
        # large vocabulary); a first Ctrl-C there once waited for all of it, and a second lost
        # the model. Here a SIGINT comes as the second held-out sequence of that validation is
        # read: the validation stops at once, the model is saved, the run exits 130.
        names = os.path.join(self.tmp, "many.txt")
        with open(names, "w", encoding="utf-8") as f:
            f.write("\n".join(f"{a}{b}{c}" for a in "abcde" for b in "aeiou" for c in "lmnrs") + "\n")
        seen, validation = [], microgpt.validation_loss

        def validating(sequences, weights, config, should_stop=None):
            if should_stop is None:          # the validation points on a subset: not this one
                return validation(sequences, weights, config)

            def stop_on_the_second():
                seen.append(1)
                if len(seen) == 2:
                    os.kill(os.getpid(), signal.SIGINT)   # its handler runs before the next line
                return should_stop()
            return validation(sequences, weights, config, stop_on_the_second)

        args = ["--input", names, "--steps", "2", "--save", "m.json", "--report", "m.html"] + TINY_NAMES
        with mock.patch.object(microgpt, "validation_loss", validating):
            result = run_main(args, self.tmp)
        self.assertEqual(result.returncode, 130, result.stderr)
        self.assertEqual(len(seen), 2, "the validation went on after the stop signal")
        self.assertIn("interrupted by SIGINT after 2 of 2 steps; saving to m.json", result.stderr)
        self.assertTrue(microgpt.is_checkpoint(os.path.join(self.tmp, "m.json")), result.stderr)
        self.assertNotIn("--resume", result.stderr)          # a run with all its steps is not resumed
        self.assertIn("`--load m.json --report m.html` draws the model as it is now", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
