"""Throwaway X.509 material for the C2PA signing tests, made with `cryptography`.

C2PA refuses self-signed signing certificates, so a usable signer needs a chain: a private CA
and an end-entity EC P-256 certificate it issued, with the key usages the C2PA profile asks for
(digitalSignature, an EKU such as emailProtection, not a CA). Readers then report the credential
as untrusted (the CA is not on their trust list), which is the expected outcome for tests.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facedag tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    """Valid from an hour ago (clock skew) for 30 days: 'valid now' without being long-lived."""
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _make_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("facedag test CA")
    ca_cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_cert, ca_key


def _signer_builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    """An end-entity certificate as the C2PA certificate profile wants it."""
    return (
        _validity(x509.CertificateBuilder())
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def make_chain(folder: Path) -> tuple[Path, Path, Path]:
    """Write a CA and an end-entity signer it issued; return (chain PEM, signer key PEM, CA PEM).

    The chain file holds the end-entity certificate first, then the CA, the order C2PA signers expect.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _make_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _signer_builder(_name("facedag test signer"), ca_cert.subject, key)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain_path, key_path, ca_path = folder / "chain.pem", folder / "signer.key", folder / "ca.pem"
    chain_path.write_bytes(_pem(cert) + _pem(ca_cert))
    key_path.write_bytes(_key_pem(key))
    ca_path.write_bytes(_pem(ca_cert))
    return chain_path, key_path, ca_path


def self_signed(folder: Path) -> tuple[Path, Path]:
    """Write a self-signed end-entity certificate and its key (C2PA must refuse it); return (cert, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("facedag self-signed")
    cert = _signer_builder(name, name, key).sign(key, hashes.SHA256())
    cert_path, key_path = folder / "self_signed.pem", folder / "self_signed.key"
    cert_path.write_bytes(_pem(cert))
    key_path.write_bytes(_key_pem(key))
    return cert_path, key_path
