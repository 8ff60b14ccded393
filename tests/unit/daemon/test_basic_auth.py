"""Basic auth costs nothing an attacker can multiply (issue 17, part 2): BasicAuth and its checks."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from pathlib import Path

import bcrypt
import pytest

from probe.config.errors import ConfigError
from probe.daemon import webconfig
from probe.daemon.webconfig import BasicAuth, load_web_config
from tests.support.abuse import basic

PASSWORD = "correct horse battery staple"
CHECKPW = bcrypt.checkpw


def hashed(password: str, cost: int) -> str:
    """A bcrypt hash of ``password`` at ``cost``, made at cost 4 when only its form matters."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


class Recorder:
    """Stands in for ``bcrypt.checkpw``: records the cost, the thread and how many run at once."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.costs: list[int] = []
        self.threads: set[str] = set()
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, password: bytes, hashed_password: bytes) -> bool:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.costs.append(int(hashed_password[4:6]))
            self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return bool(CHECKPW(password, hashed_password)) if hashed_password[4:6] == b"04" else False


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(webconfig.bcrypt, "checkpw", recorder)
    monkeypatch.setattr(webconfig, "MAX_REST_SECONDS", 0.0)
    return recorder


def verify(auth: BasicAuth, *headers: str | None) -> list[bool]:
    async def main() -> list[bool]:
        return list(await asyncio.gather(*(auth.verify(h) for h in headers)))

    return asyncio.run(main())


@pytest.mark.parametrize("cost", [4, 12])
def test_an_unknown_user_is_checked_at_the_cost_of_the_configured_hash(recorder: Recorder, cost: int) -> None:
    # The hash of cost 12 is only its form (made at cost 4): the recorder checks none at 12.
    configured = hashed(PASSWORD, 4).replace("$04$", f"${cost:02d}$", 1)
    auth = BasicAuth({"prometheus": configured})
    assert verify(auth, basic("nobody", PASSWORD), basic("prometheus", "wrong")) == [False, False]
    assert recorder.costs == [cost, cost]


def test_with_hashes_of_several_costs_an_unknown_user_costs_the_highest(recorder: Recorder) -> None:
    auth = BasicAuth({"a": hashed("x", 4), "b": hashed("y", 4).replace("$04$", "$11$", 1)})
    assert verify(auth, basic("nobody", "x")) == [False]
    assert recorder.costs == [11]


@pytest.mark.parametrize("cost", [6, 10])
def test_unknown_user_and_wrong_password_take_the_same_cpu_time(
    monkeypatch: pytest.MonkeyPatch, cost: int
) -> None:
    # CPU time of the checking thread: the same work, whatever else the machine does.
    monkeypatch.setattr(webconfig, "MAX_REST_SECONDS", 0.0)
    auth = BasicAuth({"prometheus": hashed(PASSWORD, cost)})

    def cpu(user: str) -> float:
        times = []
        for _ in range(5):
            start = time.thread_time()
            assert auth._bcrypt(user, b"wrong", b"key") is False
            times.append(time.thread_time() - start)
        return statistics.median(times)

    unknown, wrong = cpu("nobody"), cpu("prometheus")
    assert 0.7 < unknown / wrong < 1.4, (cost, unknown, wrong)


def test_checks_run_one_at_a_time_off_the_calling_loop(recorder: Recorder) -> None:
    recorder.seconds = 0.02
    auth = BasicAuth({"prometheus": hashed(PASSWORD, 4)})
    answers = verify(
        auth, *(basic("prometheus", f"wrong{i}") for i in range(8)), basic("prometheus", PASSWORD)
    )
    assert answers == [False] * 8 + [True]
    assert recorder.most == 1
    assert len(recorder.threads) == 1 and next(iter(recorder.threads)).startswith("probe-bcrypt")


def test_a_valid_password_is_checked_once_and_a_flood_of_wrong_ones_cannot_evict_it(
    recorder: Recorder,
) -> None:
    auth = BasicAuth({"prometheus": hashed(PASSWORD, 4)})
    good = basic("prometheus", PASSWORD)
    assert verify(auth, good) == [True]
    assert verify(auth, *(basic("prometheus", f"wrong{i}") for i in range(300))) == [False] * 300
    checks = len(recorder.costs)
    assert verify(auth, good, good) == [True, True]
    assert len(recorder.costs) == checks  # answered from what was remembered


def test_a_reload_keeps_what_was_remembered_unless_the_hash_changed(recorder: Recorder) -> None:
    # A reload (SIGHUP) made a new BasicAuth that had forgotten every scraper: under a flood of
    # wrong passwords the scraper's next check waited behind them, 0 of 15 scrapes answered.
    users = {"prometheus": hashed(PASSWORD, 4)}
    good = basic("prometheus", PASSWORD)
    before = BasicAuth(users)
    assert verify(before, good) == [True]
    checks = len(recorder.costs)
    reloaded = BasicAuth(dict(users), previous=before)
    assert verify(reloaded, good) == [True]
    assert len(recorder.costs) == checks  # no bcrypt check
    changed = BasicAuth({"prometheus": hashed(PASSWORD, 4)}, previous=reloaded)  # a new salt
    assert verify(changed, good) == [True]
    assert len(recorder.costs) == checks + 1  # checked again
    removed = BasicAuth({"other": hashed("x", 4)}, previous=changed)
    assert verify(removed, good) == [False]


@pytest.mark.parametrize(
    "header",
    [
        basic("prometheus", PASSWORD + "x" * 60),  # over bcrypt's 72 bytes: refused, never truncated
        basic("prometheus", "é" * 37),  # 74 bytes in UTF-8
        basic("prometheus", "a\0b"),
        "Basic not-base64!",
        "Basic " + "//79",  # not UTF-8
        "Bearer token",
        basic("prometheus", ""),
        None,
    ],
)
def test_bad_credentials_are_refused_without_an_error(recorder: Recorder, header: str | None) -> None:
    auth = BasicAuth({"prometheus": hashed(PASSWORD, 4)})
    assert verify(auth, header) == [False]


def test_a_password_of_72_bytes_is_checked() -> None:
    password = "p" * 72
    auth = BasicAuth({"prometheus": hashed(password, 4)})
    assert verify(auth, basic("prometheus", password), basic("prometheus", password[:71])) == [True, False]


def test_a_failed_check_rests_its_thread_as_long_as_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    rests: list[float] = []
    monkeypatch.setattr(webconfig.time, "sleep", rests.append)
    auth = BasicAuth({"prometheus": hashed(PASSWORD, 6)})
    assert auth._bcrypt("prometheus", b"wrong", b"k") is False
    assert auth._bcrypt("prometheus", PASSWORD.encode(), b"k") is True
    assert len(rests) == 1 and 0.0005 < rests[0] <= webconfig.MAX_REST_SECONDS


@pytest.mark.parametrize(
    "value",
    [
        "$2y$10$short",
        "$2y$10$" + "a" * 52,
        "$2y$10$" + "a" * 54,
        "$2y$03$" + hashed("x", 4)[7:],  # cost below 4
        "$2y$32$" + hashed("x", 4)[7:],  # above 31
        "$2y$10$" + "a" * 21 + "b" + "a" * 31,  # a salt with unused bits set
        "$2y$10$" + hashed("x", 4)[7:-1] + "!",
    ],
)
def test_a_malformed_hash_is_refused_at_load_naming_the_user(tmp_path: Path, value: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{value}'\n")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert str(caught.value) == (
        f"{path}: basic_auth_users: the password hash of 'alice' is not a valid bcrypt hash: "
        "$2y$, a cost of 04 to 31, $ and 53 characters, as htpasswd -nB writes it"
    )


def test_hashes_as_htpasswd_and_python_write_them_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    users = {"a": hashed("x", 4), "b": "$2y$" + hashed("x", 4)[4:], "c": "$2a$" + hashed("x", 4)[4:]}
    path.write_text("basic_auth_users:\n" + "".join(f"  {u}: '{h}'\n" for u, h in users.items()))
    assert load_web_config(path).basic_auth_users == users
