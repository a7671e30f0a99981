//! Signed library files: Ed25519 keys, signatures and their checking.
//!
//! A signature covers a fixed statement naming the file's SHA-256
//! (`reach-library-file-v1\n<hex sha256>\n`), so a file of any size is
//! signed offline without the signer holding it in memory twice, and an
//! agent checks it before downloading a byte: the agent already refuses
//! bytes whose SHA-256 is not the one the action recorded.
//!
//! Keys: a private key is a PKCS#8 document in PEM (`PRIVATE KEY`), as
//! `reach library keygen` writes it and as `openssl genpkey -algorithm
//! ed25519` does; a public key is its 32 raw bytes in standard base64; a
//! signature is its 64 bytes in standard base64.
//!
//! This module never logs, and never reads a private key from anywhere but
//! the caller's bytes.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("the private key is not an Ed25519 PKCS#8 PEM key")]
    BadPrivateKey,
    #[error("'{0}' is not an Ed25519 public key (32 bytes in base64)")]
    BadPublicKey(String),
    #[error("the signature is not 64 bytes in base64")]
    BadSignature,
    #[error("the file is not signed")]
    Unsigned,
    #[error("the signature does not match the file under any trusted key")]
    Mismatch,
    #[error("could not generate a key")]
    Generate,
}

/// What is signed for a file of this SHA-256 (hex).
pub fn statement(sha256: &str) -> Vec<u8> {
    format!("reach-library-file-v1\n{}\n", sha256.to_ascii_lowercase()).into_bytes()
}

/// A new key pair: the private key as PEM, the public key as base64.
pub fn generate() -> Result<(String, String), SigningError> {
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| SigningError::Generate)?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| SigningError::Generate)?;
    let body = STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok((pem, STANDARD.encode(pair.public_key().as_ref())))
}

fn key_pair(private_pem: &str) -> Result<Ed25519KeyPair, SigningError> {
    let body: String = private_pem
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("-----") && !line.is_empty())
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|_| SigningError::BadPrivateKey)?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| SigningError::BadPrivateKey)
}

/// The public key (base64) of a private key (PEM).
pub fn public_key(private_pem: &str) -> Result<String, SigningError> {
    Ok(STANDARD.encode(key_pair(private_pem)?.public_key().as_ref()))
}

/// Signs the statement for a file of this SHA-256; the signature in base64.
pub fn sign(private_pem: &str, sha256: &str) -> Result<String, SigningError> {
    let pair = key_pair(private_pem)?;
    Ok(STANDARD.encode(pair.sign(&statement(sha256)).as_ref()))
}

/// Hex SHA-256 of a file, read in 1 MiB pieces.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A public key an agent or server trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey(Vec<u8>);

impl TrustedKey {
    pub fn parse(base64: &str) -> Result<Self, SigningError> {
        match STANDARD.decode(base64.trim()) {
            Ok(bytes) if bytes.len() == 32 => Ok(Self(bytes)),
            _ => Err(SigningError::BadPublicKey(
                base64.chars().take(60).collect(),
            )),
        }
    }
}

/// Checks that a signature (base64) is well formed: 64 bytes.
pub fn check_signature_form(signature: &str) -> Result<Vec<u8>, SigningError> {
    match STANDARD.decode(signature.trim()) {
        Ok(bytes) if bytes.len() == 64 => Ok(bytes),
        _ => Err(SigningError::BadSignature),
    }
}

/// Checks a file's signature against the trusted keys: Ok when one of them
/// signed the statement for `sha256`.
pub fn verify(
    trusted: &[TrustedKey],
    sha256: &str,
    signature: Option<&str>,
) -> Result<(), SigningError> {
    let signature = check_signature_form(signature.ok_or(SigningError::Unsigned)?)?;
    let message = statement(sha256);
    trusted
        .iter()
        .any(|key| {
            UnparsedPublicKey::new(&ED25519, &key.0)
                .verify(&message, &signature)
                .is_ok()
        })
        .then_some(())
        .ok_or(SigningError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_signature_verifies_under_its_key_only_and_for_its_file_only() {
        let (private, public) = generate().unwrap();
        assert_eq!(public_key(&private).unwrap(), public);
        let signature = sign(&private, SHA).unwrap();
        let trusted = [TrustedKey::parse(&public).unwrap()];
        assert_eq!(verify(&trusted, SHA, Some(&signature)), Ok(()));
        assert_eq!(
            verify(&trusted, &SHA.to_ascii_uppercase(), Some(&signature)),
            Ok(()),
            "hex case does not matter"
        );
        let other_file = SHA.replace('9', "8");
        assert_eq!(
            verify(&trusted, &other_file, Some(&signature)),
            Err(SigningError::Mismatch)
        );
        let (_, stranger) = generate().unwrap();
        let strangers = [TrustedKey::parse(&stranger).unwrap()];
        assert_eq!(
            verify(&strangers, SHA, Some(&signature)),
            Err(SigningError::Mismatch)
        );
        let both = [strangers[0].clone(), trusted[0].clone()];
        assert_eq!(verify(&both, SHA, Some(&signature)), Ok(()));
        assert_eq!(verify(&trusted, SHA, None), Err(SigningError::Unsigned));
        assert_eq!(
            verify(&trusted, SHA, Some("bm90IGEgc2lnbmF0dXJl")),
            Err(SigningError::BadSignature)
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(TrustedKey::parse("AAAA").is_err());
        assert!(TrustedKey::parse("not base64!").is_err());
        assert_eq!(
            sign(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                SHA
            ),
            Err(SigningError::BadPrivateKey)
        );
    }

    #[test]
    fn an_openssl_key_is_accepted() {
        // `openssl genpkey -algorithm ed25519` (PKCS#8 v1).
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINs3hV0vGubd6z6LoGp76d5J0jTu3mVN1Gve8m9TIRsA\n-----END PRIVATE KEY-----\n";
        let public = public_key(pem).unwrap();
        let signature = sign(pem, SHA).unwrap();
        let trusted = [TrustedKey::parse(&public).unwrap()];
        assert_eq!(verify(&trusted, SHA, Some(&signature)), Ok(()));
    }
}
