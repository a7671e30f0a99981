//! Signed library files: Ed25519 keys, signatures and their checking.
//!
//! A signature covers a fixed statement naming the file's SHA-256, the
//! library name it is signed for and the uses it is signed for
//! (`reach-library-file-v2\nsha256:<hex>\nname:<lower-case name>\nuses:PutFile,RunScript\n`),
//! so a file of any size is signed offline without the signer holding it in
//! memory twice, an agent checks it before downloading a byte (it already
//! refuses bytes whose SHA-256 is not the one the action recorded), and a
//! signed data file uploaded again under a script's name, or signed for
//! PutFile only, is not run. Signatures of the first format (the SHA-256
//! alone, `reach-library-file-v1`) verify only where the operator opts in.
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

/// Why a key or signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    /// The private key file is not an Ed25519 key.
    #[error("the private key is not an Ed25519 PKCS#8 PEM key")]
    BadPrivateKey,
    /// A trusted key is not an Ed25519 public key.
    #[error("'{0}' is not an Ed25519 public key (32 bytes in base64)")]
    BadPublicKey(String),
    /// A signature is malformed.
    #[error("the signature is not 64 bytes in base64")]
    BadSignature,
    /// A signature was required and the file has none.
    #[error("the file is not signed")]
    Unsigned,
    /// No trusted key made the signature.
    #[error("the signature does not match the file under any trusted key")]
    Mismatch,
    /// The system's random source failed.
    #[error("could not generate a key")]
    Generate,
}

/// What a library file may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Put on devices by PutFile.
    PutFile,
    /// Run by RunScript.
    RunScript,
}

impl Use {
    /// The name a signature covers.
    pub fn as_str(self) -> &'static str {
        match self {
            Use::PutFile => "PutFile",
            Use::RunScript => "RunScript",
        }
    }
}

/// The uses a signature allows: one, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uses {
    /// For this use only.
    Only(Use),
    /// For PutFile and RunScript.
    Both,
}

impl Uses {
    fn text(self) -> &'static str {
        match self {
            Uses::Only(one) => one.as_str(),
            Uses::Both => "PutFile,RunScript",
        }
    }

    /// `put`, `run` or `both`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "put" | "putfile" => Some(Uses::Only(Use::PutFile)),
            "run" | "runscript" => Some(Uses::Only(Use::RunScript)),
            "both" => Some(Uses::Both),
            _ => None,
        }
    }

    /// What a file of this name is signed for unless told otherwise: both
    /// for a script (.sh, .bash, .py, .ps1), PutFile only for anything else.
    pub fn default_for(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        let script = [".sh", ".bash", ".py", ".ps1"]
            .iter()
            .any(|ext| lower.ends_with(ext));
        if script {
            Uses::Both
        } else {
            Uses::Only(Use::PutFile)
        }
    }
}

/// What is signed for a file of this SHA-256 (hex), library name and uses.
pub fn statement(sha256: &str, name: &str, uses: Uses) -> Vec<u8> {
    format!(
        "reach-library-file-v2\nsha256:{}\nname:{}\nuses:{}\n",
        sha256.to_ascii_lowercase(),
        name.to_lowercase(),
        uses.text()
    )
    .into_bytes()
}

/// The first format's statement: the SHA-256 alone.
fn statement_v1(sha256: &str) -> Vec<u8> {
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

/// Signs the statement for a file of this SHA-256, library name and uses;
/// the signature in base64.
pub fn sign(
    private_pem: &str,
    sha256: &str,
    name: &str,
    uses: Uses,
) -> Result<String, SigningError> {
    let pair = key_pair(private_pem)?;
    Ok(STANDARD.encode(pair.sign(&statement(sha256, name, uses)).as_ref()))
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
    /// A key from its base64 (32 bytes).
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

/// What a signature must cover to be accepted.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// Hex SHA-256 of the file.
    pub sha256: &'a str,
    /// The library name the file is used under.
    pub name: &'a str,
    /// The use at hand; None (the server, at upload): any use.
    pub used_for: Option<Use>,
    /// Also accept the first format's signatures (the SHA-256 alone).
    pub accept_v1: bool,
}

/// Checks a file's signature against the trusted keys: Ok when one of them
/// signed a statement for this SHA-256 and name whose uses include the one
/// at hand (or, when allowed, the first format's statement).
pub fn verify(
    trusted: &[TrustedKey],
    check: Check<'_>,
    signature: Option<&str>,
) -> Result<(), SigningError> {
    let signature = check_signature_form(signature.ok_or(SigningError::Unsigned)?)?;
    let uses: &[Uses] = match check.used_for {
        Some(one) => &[Uses::Only(one), Uses::Both],
        None => &[
            Uses::Both,
            Uses::Only(Use::PutFile),
            Uses::Only(Use::RunScript),
        ],
    };
    let mut messages: Vec<Vec<u8>> = uses
        .iter()
        .map(|uses| statement(check.sha256, check.name, *uses))
        .collect();
    if check.accept_v1 {
        messages.push(statement_v1(check.sha256));
    }
    trusted
        .iter()
        .any(|key| {
            let key = UnparsedPublicKey::new(&ED25519, &key.0);
            messages
                .iter()
                .any(|message| key.verify(message, &signature).is_ok())
        })
        .then_some(())
        .ok_or(SigningError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn check<'a>(sha256: &'a str, name: &'a str, used_for: Option<Use>) -> Check<'a> {
        Check {
            sha256,
            name,
            used_for,
            accept_v1: false,
        }
    }

    #[test]
    fn a_signature_verifies_under_its_key_only_and_for_its_file_only() {
        let (private, public) = generate().unwrap();
        assert_eq!(public_key(&private).unwrap(), public);
        let signature = sign(&private, SHA, "collect.sh", Uses::Both).unwrap();
        let trusted = [TrustedKey::parse(&public).unwrap()];
        let run = Some(Use::RunScript);
        assert_eq!(
            verify(&trusted, check(SHA, "collect.sh", run), Some(&signature)),
            Ok(())
        );
        assert_eq!(
            verify(
                &trusted,
                check(&SHA.to_ascii_uppercase(), "Collect.SH", run),
                Some(&signature)
            ),
            Ok(()),
            "hex and name case do not matter"
        );
        let other_file = SHA.replace('9', "8");
        assert_eq!(
            verify(
                &trusted,
                check(&other_file, "collect.sh", run),
                Some(&signature)
            ),
            Err(SigningError::Mismatch)
        );
        let (_, stranger) = generate().unwrap();
        let strangers = [TrustedKey::parse(&stranger).unwrap()];
        assert_eq!(
            verify(&strangers, check(SHA, "collect.sh", run), Some(&signature)),
            Err(SigningError::Mismatch)
        );
        let both = [strangers[0].clone(), trusted[0].clone()];
        assert_eq!(
            verify(&both, check(SHA, "collect.sh", run), Some(&signature)),
            Ok(())
        );
        assert_eq!(
            verify(&trusted, check(SHA, "collect.sh", run), None),
            Err(SigningError::Unsigned)
        );
        assert_eq!(
            verify(
                &trusted,
                check(SHA, "collect.sh", run),
                Some("bm90IGEgc2lnbmF0dXJl")
            ),
            Err(SigningError::BadSignature)
        );
    }

    #[test]
    fn the_name_and_the_uses_are_signed_too() {
        let (private, public) = generate().unwrap();
        let trusted = [TrustedKey::parse(&public).unwrap()];
        // A data file signed for PutFile under its own name...
        let data = sign(&private, SHA, "records.csv", Uses::Only(Use::PutFile)).unwrap();
        let put = check(SHA, "records.csv", Some(Use::PutFile));
        assert_eq!(verify(&trusted, put, Some(&data)), Ok(()));
        // ...is not a script under another name, nor run under its own.
        assert_eq!(
            verify(
                &trusted,
                check(SHA, "records.sh", Some(Use::RunScript)),
                Some(&data)
            ),
            Err(SigningError::Mismatch)
        );
        assert_eq!(
            verify(
                &trusted,
                check(SHA, "records.sh", Some(Use::PutFile)),
                Some(&data)
            ),
            Err(SigningError::Mismatch)
        );
        assert_eq!(
            verify(
                &trusted,
                check(SHA, "records.csv", Some(Use::RunScript)),
                Some(&data)
            ),
            Err(SigningError::Mismatch)
        );
        // At upload the use is not known yet: any signed use will do.
        assert_eq!(
            verify(&trusted, check(SHA, "records.csv", None), Some(&data)),
            Ok(())
        );
        assert_eq!(Uses::default_for("Collect.PS1"), Uses::Both);
        assert_eq!(Uses::default_for("tool.exe"), Uses::Only(Use::PutFile));
        assert_eq!(Uses::parse("run"), Some(Uses::Only(Use::RunScript)));
        assert_eq!(Uses::parse("sometimes"), None);
    }

    #[test]
    fn first_format_signatures_verify_only_when_allowed() {
        let (private, public) = generate().unwrap();
        let trusted = [TrustedKey::parse(&public).unwrap()];
        let pair = key_pair(&private).unwrap();
        let old = STANDARD.encode(pair.sign(&statement_v1(SHA)).as_ref());
        let mut run = check(SHA, "any.sh", Some(Use::RunScript));
        assert_eq!(
            verify(&trusted, run, Some(&old)),
            Err(SigningError::Mismatch)
        );
        run.accept_v1 = true;
        assert_eq!(verify(&trusted, run, Some(&old)), Ok(()));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(TrustedKey::parse("AAAA").is_err());
        assert!(TrustedKey::parse("not base64!").is_err());
        assert_eq!(
            sign(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                SHA,
                "a.sh",
                Uses::Both
            ),
            Err(SigningError::BadPrivateKey)
        );
    }

    #[test]
    fn an_openssl_key_is_accepted() {
        // `openssl genpkey -algorithm ed25519` (PKCS#8 v1).
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINs3hV0vGubd6z6LoGp76d5J0jTu3mVN1Gve8m9TIRsA\n-----END PRIVATE KEY-----\n";
        let public = public_key(pem).unwrap();
        let signature = sign(pem, SHA, "a.sh", Uses::Both).unwrap();
        let trusted = [TrustedKey::parse(&public).unwrap()];
        assert_eq!(
            verify(
                &trusted,
                check(SHA, "a.sh", Some(Use::RunScript)),
                Some(&signature)
            ),
            Ok(())
        );
    }
}
