//! Optional ed25519 signatures over the ensemble manifest. The manifest lists every member's
//! SHA-256, so a valid signature vouches for the whole ensemble. The private key stays with the
//! team that releases models (`dermedge-tools sign`); the device holds only the public key.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use crate::paths::read_text_limited;

/// Re-exported for `dermedge-tools sign`, which writes keys and signatures in this hex.
pub use crate::digest::{hex_decode, hex_encode};

/// Why a signature check failed.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("cannot read public key {path}: {source}. Fix: set public_key (or --public-key) to the release's .pub file")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("public key {path} is not 64 hex digits of an ed25519 key. Fix: use the .pub file written by `dermedge-tools keygen`")]
    BadKey { path: PathBuf },
    #[error("ensemble {manifest} is not signed ({signature} is missing) but a public key is configured. Fix: install the signed release, or sign it with `dermedge-tools sign`")]
    Unsigned {
        manifest: PathBuf,
        signature: PathBuf,
    },
    #[error("signature {signature} is unreadable or not 128 hex digits. Fix: check its permissions, or re-sign the ensemble with `dermedge-tools sign`")]
    BadSignature { signature: PathBuf },
    #[error("ensemble {manifest} does not match its signature {signature}: it was changed after signing, or signed with another key. Fix: reinstall the signed release; do not edit a signed manifest")]
    Mismatch {
        manifest: PathBuf,
        signature: PathBuf,
    },
}

/// Where the signature of a manifest is stored: `<manifest>.sig`.
pub fn signature_path(manifest: &Path) -> PathBuf {
    crate::paths::with_suffix(manifest, ".sig")
}

/// Largest key or signature file read, in bytes.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// A public key that ensembles must be signed with.
#[derive(Debug, Clone)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Reads a `.pub` file (64 hex digits).
    pub fn load(path: &Path) -> Result<PublicKey, SignatureError> {
        let text = read_text_limited(path, MAX_KEY_FILE_BYTES).map_err(|source| {
            SignatureError::ReadKey {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let bytes = hex_decode::<32>(&text).ok_or_else(|| SignatureError::BadKey {
            path: path.to_path_buf(),
        })?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| SignatureError::BadKey {
                path: path.to_path_buf(),
            })
    }

    /// The key from raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<PublicKey> {
        VerifyingKey::from_bytes(bytes).ok().map(PublicKey)
    }

    /// Checks `<manifest>.sig` against the manifest's exact bytes.
    pub fn verify_manifest(&self, manifest: &Path, bytes: &[u8]) -> Result<(), SignatureError> {
        let signature = signature_path(manifest);
        let text = match read_text_limited(&signature, MAX_KEY_FILE_BYTES) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SignatureError::Unsigned {
                    manifest: manifest.to_path_buf(),
                    signature,
                })
            }
            Err(_) => return Err(SignatureError::BadSignature { signature }),
        };
        let raw = hex_decode::<64>(&text).ok_or_else(|| SignatureError::BadSignature {
            signature: signature.clone(),
        })?;
        self.0
            .verify(bytes, &Signature::from_bytes(&raw))
            .map_err(|_| SignatureError::Mismatch {
                manifest: manifest.to_path_buf(),
                signature,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn verifies_only_the_signed_bytes_with_the_right_key() {
        let dir = crate::scratch_dir::ScratchDir::new();
        let manifest = dir.path().join("ensemble.toml");
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        let key = PublicKey::from_bytes(&signing.verifying_key().to_bytes()).unwrap();
        let text = b"name = \"x\"\n";
        assert!(matches!(
            key.verify_manifest(&manifest, text),
            Err(SignatureError::Unsigned { .. })
        ));
        std::fs::write(
            signature_path(&manifest),
            hex_encode(&signing.sign(text).to_bytes()),
        )
        .unwrap();
        key.verify_manifest(&manifest, text).unwrap();
        assert!(matches!(
            key.verify_manifest(&manifest, b"name = \"y\"\n"),
            Err(SignatureError::Mismatch { .. })
        ));
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let other_key = PublicKey::from_bytes(&other.verifying_key().to_bytes()).unwrap();
        assert!(matches!(
            other_key.verify_manifest(&manifest, text),
            Err(SignatureError::Mismatch { .. })
        ));
        std::fs::write(signature_path(&manifest), "zz").unwrap();
        assert!(matches!(
            key.verify_manifest(&manifest, text),
            Err(SignatureError::BadSignature { .. })
        ));
    }
}
