"""The consent gate: a missing or expired record stops with one line that names whose it is."""

from __future__ import annotations

import pytest
import yaml

from facedag.consent import require_consent
from facedag.params import Params
from facedag.records import StageFailed
from tests.conftest import REPO


def _params(**changes) -> Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in changes.items():
        node = raw
        *path, last = dotted.split("__")
        for key in path:
            node = node[key]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return Params.model_validate(raw)


def test_the_demo_records_pass():
    require_consent(_params(), ["src", "dst"], target=True)


def test_a_missing_identity_record_names_the_identity():
    params = _params(identities__dst__consent=None)
    require_consent(params, ["src"], target=False)  # data about dst alone does not need it
    with pytest.raises(StageFailed, match=r"no consent record for identities\.dst"):
        require_consent(params, ["src", "dst"], target=False)


def test_a_missing_target_record_names_the_target():
    with pytest.raises(StageFailed, match="no consent record for target"):
        require_consent(_params(target__consent=None), ["src"], target=True)


def test_an_expired_record_is_refused():
    record = {"subject": "x", "basis": "consent", "evidence": "form.pdf", "scope": "film", "expires": "2020-01-01"}
    with pytest.raises(StageFailed, match=r"identities\.src expired on 2020-01-01"):
        require_consent(_params(identities__src__consent=record), ["src"], target=False)


def test_an_unknown_identity_is_named():
    with pytest.raises(StageFailed, match=r"'carol' is not in params\.yaml"):
        require_consent(_params(), ["carol"], target=False)
