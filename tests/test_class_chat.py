"""The chat for a whole class (tester round 3, items 1, 7 and 8): the listen backlog, the
page retrying a busy server, the addresses printed for --host 0.0.0.0, what the 403 for a
wrong Host says, capital letters in requests, and a long request in a narrow window."""
import http.client
import ipaddress
import json
import os
import random
import select
import socket
import subprocess
import tempfile
import threading
import unittest
from unittest import mock

from tests.support import MICROGPT_COMMAND, microgpt, run_main
from tests.test_server import (WithBrowser, CHROMEDRIVER, CHROMIUM, HAVE_SELENIUM, JSON, WAIT, PacedReply, Served,
                               chat_model, headless_chromium, model_reply, port_of, save_chat_model)

if HAVE_SELENIUM:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

CLASS = 40         # students pressing Enter together


def tiny_models(directory):
    """Paths of two tiny chat models: the tests' lower-case one, and one that also knows the
    capital letters."""
    lower = os.path.join(directory, "chat.json")
    save_chat_model(lower)
    weights, config, _ = chat_model()
    letters = "abcdefghijklmnopqrstuvwxyz"
    chars = microgpt.chat_vocab(microgpt.build_vocab(letters + letters.upper()))
    params = microgpt.init_params(config, len(chars), random.Random(0))
    mixed = os.path.join(directory, "mixed.json")
    microgpt.save_checkpoint(mixed, params, config, chars, "chat")
    return lower, mixed


class WithTinyModels(unittest.TestCase):
    """A class whose tests use tiny_models, made once for the class in its own directory."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model, cls.mixed = tiny_models(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()


class TestAClassAtOnce(unittest.TestCase):

    def test_the_server_listens_with_a_backlog_for_a_class(self):
        backlogs = []
        real_listen = socket.socket.listen

        def listen(sock, *args):
            backlogs.append(args[0])
            return real_listen(sock, *args)
        with mock.patch.object(socket.socket, "listen", listen):
            server = microgpt.ChatServer("127.0.0.1", 0, model_reply, {"model": {}}, 0.5, 42)
        server.server_close()
        self.assertEqual(backlogs, [microgpt.LISTEN_BACKLOG])
        self.assertGreaterEqual(microgpt.LISTEN_BACKLOG, CLASS)

    def test_a_class_of_connections_is_held_while_the_server_is_busy(self):
        # The server does not accept (no serve_forever): the system holds the connections.
        # With socketserver's backlog of 5, all but about 6 of them stayed unanswered.
        server = microgpt.ChatServer("127.0.0.1", 0, model_reply, {"model": {}}, 0.5, 42)
        clients = []
        try:
            for _ in range(CLASS):
                s = socket.socket()
                clients.append(s)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", server.port))
            pending = set(clients)
            while pending:                 # a connection is writable once the system has taken it
                _, ready, _ = select.select([], list(pending), [], 2)
                if not ready:
                    break
                pending -= set(ready)
            connected = [s for s in clients if s not in pending and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
            self.assertEqual(len(connected), CLASS)
        finally:
            for s in clients:
                s.close()
            server.server_close()

    def test_a_busy_answer_says_when_to_come_back_and_the_page_waits_that_long(self):
        paced = PacedReply()
        with Served(paced, generations=1) as served:
            first = served.connect()
            first.request("POST", "/api/chat", json.dumps({"request": "a name starting with m"}), JSON)
            self.assertTrue(paced.started.wait(WAIT))
            status, headers, _ = served.send("POST", "/api/chat", json.dumps({"request": "a name starting with m"}), JSON)
            for _ in range(microgpt.MAX_ANSWER_TOKENS):
                paced.go.release()
            first.getresponse().read()
            first.close()
        self.assertEqual(status, 503)
        self.assertGreater(float(headers["Retry-After"]), 0)
        page = microgpt.chat_page()
        self.assertTrue('res.headers.get("Retry-After")' in page and "waiting for the model..." in page)


class TestTheAddressesAndTheHostCheck(WithTinyModels):

    def serve(self, host, addresses):
        """What `--serve --host HOST --port 0` prints when the machine's network addresses
        are `addresses`; it stops at once instead of serving."""
        with mock.patch.object(microgpt, "lan_addresses", return_value=addresses) as found, \
                mock.patch.object(microgpt.ChatServer, "serve_forever"):
            result = run_main(["--load", self.model, "--serve", "--port", "0", "--host", host], self.tmp.name)
        self.assertEqual(result.returncode, 0, result.stderr)
        port = int(result.stdout.split("http://127.0.0.1:")[1].split("/")[0])
        return result.stdout, port, found.called

    def test_every_address_is_printed_for_students_when_listening_on_all_of_them(self):
        out, port, _ = self.serve("0.0.0.0", ["10.0.0.5", "192.168.1.20"])
        self.assertIn(f"http://10.0.0.5:{port}/", out)
        self.assertIn(f"http://192.168.1.20:{port}/", out)
        out, port, _ = self.serve("0.0.0.0", [])
        self.assertIn(f"http://ADDRESS:{port}/", out)
        self.assertIn("none found", out)
        out, _, looked = self.serve("127.0.0.1", ["192.168.1.20"])
        self.assertNotIn("192.168.1.20", out)
        self.assertFalse(looked)

    def test_the_lan_addresses_leave_out_loopback_and_send_nothing(self):
        connected, sent = [], []

        class FakeUDP:
            """A UDP socket that records what it is asked to do."""
            def __init__(self, *args):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

            def connect(self, address):
                connected.append(address[0])

            def getsockname(self):
                return ("192.168.1.20", 40000)

            def sendto(self, *args):
                sent.append(args)
            send = sendall = sendmsg = sendto
        resolved = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in ("127.0.1.1", "10.0.0.5")]
        with mock.patch.object(microgpt.socket, "getaddrinfo", return_value=resolved), \
                mock.patch.object(microgpt.socket, "socket", FakeUDP):
            found = microgpt.lan_addresses()
        self.assertTrue(connected)
        self.assertTrue(all(ipaddress.ip_address(a).is_private for a in connected), connected)
        self.assertEqual(sorted(found), ["10.0.0.5", "192.168.1.20"])
        self.assertEqual(sent, [])

    def test_the_403_names_what_the_server_accepts_and_it_does_accept_it(self):
        name = socket.gethostname().lower()
        for bound in ("127.0.0.1", "0.0.0.0"):
            server = microgpt.ChatServer(bound, 0, model_reply, {"model": {}}, 0.5, 42)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            port = server.port

            def status(host):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
                try:
                    conn.request("GET", "/", headers={"Host": host})
                    response = conn.getresponse()
                    return response.status, response.read().decode("utf-8")
                finally:
                    conn.close()
            try:
                with self.subTest(bound=bound):
                    code, body = status(f"evil.example:{port}")
                    self.assertEqual(code, 403)
                    said = json.loads(body)["error"]
                    named = [f"localhost:{port}"] + ([f"{name}:{port}", f"{name}.local:{port}"] if bound == "0.0.0.0"
                                                     else [f"127.0.0.1:{port}"])
                    for host in named:
                        self.assertIn(host, said)
                        self.assertEqual(status(host)[0], 200, host)
                    # An IP address is a name only when the server listens on every address.
                    self.assertEqual("any IP address" in said, bound == "0.0.0.0")
                    self.assertEqual(status(f"192.0.2.7:{port}")[0], 200 if bound == "0.0.0.0" else 403)
                    if bound == "127.0.0.1":
                        self.assertEqual(status(f"{name}:{port}")[0], 403)
            finally:
                server.shutdown()
                server.server_close()
                thread.join(WAIT)


class TestCapitalLetters(WithTinyModels):

    def answer_lines(self, model, request):
        result = run_main(["--load", model, "--chat", "--seed", "3"], self.tmp.name, stdin=request + "\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.splitlines()[2:]          # after the model's line and the echo

    def test_the_terminal_lower_cases_a_request_only_for_a_lower_case_model(self):
        self.assertEqual(self.answer_lines(self.model, "A Name Starting With M"),
                         self.answer_lines(self.model, "a name starting with m"))
        self.assertNotIn("cannot answer", self.answer_lines(self.model, "A Name Starting With M")[0])
        # A model that knows capital letters gets the case it was given.
        said = self.answer_lines(self.mixed, "A name starting with M")[0]
        self.assertIn("cannot answer", said)
        self.assertIn("'A name starting with M'", said)
        self.assertNotIn("cannot answer", self.answer_lines(self.mixed, "a name starting with M")[0])

    def test_the_api_lower_cases_a_request_for_a_lower_case_model(self):
        proc = subprocess.Popen(MICROGPT_COMMAND + ["--load", self.model, "--serve", "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1"))
        try:
            port = port_of(proc)

            def ask(request):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
                try:
                    conn.request("POST", "/api/chat", json.dumps({"request": request, "seed": 5}),
                                 dict(JSON, Host=f"localhost:{port}"))
                    response = conn.getresponse()
                    return response.status, response.read().decode("utf-8").splitlines()[-1]
                finally:
                    conn.close()
            capitals, lower = ask("A Name Starting With M"), ask("a name starting with m")
        finally:
            proc.kill()
            proc.communicate()
        self.assertEqual(capitals[0], 200, capitals)
        self.assertEqual(capitals, lower)

    def test_the_page_input_is_not_capitalised_or_corrected(self):
        page = microgpt.chat_page()
        tag = page[page.index('<input id="request"'):]
        tag = tag[:tag.index(">")]
        for attribute in ('autocapitalize="off"', 'autocomplete="off"', 'spellcheck="false"'):
            self.assertIn(attribute, tag)


class TestTheChatPageForAClass(WithBrowser):

    def test_the_page_waits_out_a_busy_server_and_then_shows_the_answer(self):
        paced = PacedReply()
        with Served(paced, generations=1) as served:
            first = served.connect()              # holds the one slot after its first token
            first.request("POST", "/api/chat", json.dumps({"request": "a name starting with m"}), JSON)
            self.assertTrue(paced.started.wait(WAIT))
            self.driver.get(f"http://localhost:{served.port}/")
            self.driver.find_element(By.ID, "request").send_keys("a name starting with m", Keys.ENTER)
            WebDriverWait(self.driver, WAIT).until(
                lambda d: "waiting for the model" in d.find_element(By.CSS_SELECTOR, ".assistant").text)
            for _ in range(2 * microgpt.MAX_ANSWER_TOKENS):     # both answers may now run to their end
                paced.go.release()
            first.getresponse().read()
            first.close()
            WebDriverWait(self.driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant[data-done]"))
            turn = self.driver.find_element(By.CSS_SELECTOR, ".assistant")
            self.assertEqual(turn.get_attribute("data-done"), "1")
            self.assertTrue(turn.find_elements(By.CSS_SELECTOR, ".tok"))
            self.assertNotIn("waiting", turn.text)

    def test_a_long_request_without_spaces_does_not_widen_the_page(self):
        with Served() as served:
            for width in (480, 1280):
                with self.subTest(width=width):
                    self.driver.set_window_size(width, 800)
                    self.driver.get(f"http://localhost:{served.port}/")
                    self.driver.find_element(By.ID, "request").send_keys("x" * microgpt.MAX_REQUEST_CHARS, Keys.ENTER)
                    WebDriverWait(self.driver, WAIT).until(
                        lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant[data-done]"))
                    if os.environ.get("MICROGPT_SCREENSHOTS"):
                        self.driver.save_screenshot(os.path.join(os.environ["MICROGPT_SCREENSHOTS"], f"chat{width}.png"))
                    wide, seen = self.driver.execute_script(
                        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
                    self.assertLessEqual(wide, seen)
            self.driver.set_window_size(760, 520)


if __name__ == "__main__":
    unittest.main()
