"""The consent gate: a missing, malformed or expired record, or evidence that changed, stops with
one line that names whose record it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facedag.params import Params, load_params
from facedag.provenance.consent import check_evidence, require_consent
from facedag.records import StageFailed
from facedag.sources.demo import write_evidence
from tests.conftest import REPO


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project folder holding the demo's evidence files where params.yaml names them."""
    write_evidence(tmp_path / "data" / "demo")
    return tmp_path


def _raw(**changes) -> dict:
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
    return raw


def _params(**changes) -> Params:
    return Params.model_validate(_raw(**changes))


def test_the_demo_records_pass(root: Path) -> None:
    require_consent(_params(), ["src", "dst"], target=True, root=root)
    assert check_evidence(_params().identities["src"].consent, root) == "verified"


def test_a_missing_identity_record_names_the_identity(root: Path) -> None:
    params = _params(identities__dst__consent=None)
    require_consent(params, ["src"], target=False, root=root)  # data about dst alone does not need it
    with pytest.raises(StageFailed, match=r"no consent record for identities\.dst"):
        require_consent(params, ["src", "dst"], target=False, root=root)


def test_a_missing_target_record_names_the_target(root: Path) -> None:
    with pytest.raises(StageFailed, match="no consent record for target"):
        require_consent(_params(target__consent=None), ["src"], target=True, root=root)


def test_an_expired_record_is_refused(root: Path) -> None:
    params = _params(identities__src__consent__expires="2020-01-01")
    with pytest.raises(StageFailed, match=r"identities\.src expired on 2020-01-01"):
        require_consent(params, ["src"], target=False, root=root)


def test_an_unknown_identity_is_named(root: Path) -> None:
    with pytest.raises(StageFailed, match=r"'carol' is not in params\.yaml"):
        require_consent(_params(), ["carol"], target=False, root=root)


def test_missing_evidence_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(StageFailed, match=r"^identities\.src\.consent: evidence file not found: data/demo/licence-"):
        require_consent(_params(), ["src"], target=False, root=tmp_path)


def test_changed_evidence_is_refused(root: Path) -> None:
    (root / "data" / "demo" / "licence-grace_hopper.txt").write_text("edited after signing\n")
    require_consent(_params(), ["src"], target=False, root=root)
    with pytest.raises(StageFailed, match=r"^target\.consent: evidence .* changed since the record was made"):
        require_consent(_params(), ["src"], target=True, root=root)


def test_evidence_at_a_url_is_carried_unfetched(root: Path) -> None:
    params = _params(identities__src__consent__evidence="https://example.org/release-form.pdf")
    require_consent(params, ["src"], target=False, root=root)
    assert check_evidence(params.identities["src"].consent, root) == "url"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"identities__src__consent__evidence_sha256": None}, "identities.src.consent.evidence_sha256: Field required"),
        ({"identities__src__consent__evidence_sha256": "abc"}, "identities.src.consent.evidence_sha256: String should"),
        ({"identities__src__consent__basis": "vibes"}, "identities.src.consent.basis: Input should be"),
        ({"target__consent__subject": ""}, "target.consent.subject: String should have at least 1 character"),
        ({"target__consent__expires": "next year"}, "target.consent.expires: Input should be a valid date"),
        ({"identities__dst__consent__signed_by": "me"}, "identities.dst.consent.signed_by: Extra inputs"),
    ],
)
def test_a_malformed_record_is_one_line_naming_the_key(tmp_path: Path, change: dict, key: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_raw(**change)))
    with pytest.raises(StageFailed) as err:
        load_params(path)
    message = str(err.value)
    assert "\n" not in message and f"{path}: {key}" in message, message
