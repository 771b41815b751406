"""A scheduled session's budget (FACEDAG_TRAIN_MINUTES) shortens a run, never lengthens it."""

from __future__ import annotations

import pytest

from facedag.records import StageFailed
from facedag.training.stopping import SESSION_ENV, session_budget


def test_without_a_session_the_params_budget_holds(monkeypatch):
    monkeypatch.delenv(SESSION_ENV, raising=False)
    assert session_budget(6.0) == 6.0


@pytest.mark.parametrize(("session", "expected"), [("2.5", 2.5), ("600", 6.0)])
def test_a_session_takes_the_shorter_budget(monkeypatch, session, expected):
    monkeypatch.setenv(SESSION_ENV, session)
    assert session_budget(6.0) == expected


@pytest.mark.parametrize("session", ["soon", "0", "-1"])
def test_a_bad_session_budget_is_one_clear_error(monkeypatch, session):
    monkeypatch.setenv(SESSION_ENV, session)
    with pytest.raises(StageFailed, match=SESSION_ENV):
        session_budget(6.0)
