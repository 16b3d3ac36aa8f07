//! Release signing: an ed25519 key pair for the team that ships models, and signatures over
//! ensemble manifests. The private key never goes on a device.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dermedge::integrity::{hex_decode, hex_encode, signature_path};
use dermedge::{Ensemble, Manifest};
use ed25519_dalek::{Signer, SigningKey};

/// Writes `<prefix>.key` (private, mode 0600) and `<prefix>.pub`; refuses to overwrite a key.
pub fn keygen(prefix: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let private = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    if private.exists() {
        bail!(
            "{} exists; refusing to overwrite a private key. Fix: choose another --out",
            private.display()
        );
    }
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("cannot read /dev/urandom for a new key")?;
    let key = SigningKey::from_bytes(&seed);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&private)
        .with_context(|| format!("cannot create {}", private.display()))?;
    writeln!(file, "{}", hex_encode(&seed))?;
    std::fs::write(
        &public,
        format!("{}\n", hex_encode(&key.verifying_key().to_bytes())),
    )
    .with_context(|| format!("cannot write {}", public.display()))?;
    Ok((private, public))
}

fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read private key {}", path.display()))?;
    let seed = hex_decode::<32>(&text).with_context(|| {
        format!(
            "{} is not a private key written by `dermedge-tools keygen`",
            path.display()
        )
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Checks that the ensemble loads (checksums, shapes), then writes `<manifest>.sig`.
pub fn sign(manifest: &Path, key: &Path) -> anyhow::Result<PathBuf> {
    Ensemble::load(manifest).with_context(|| "refusing to sign an ensemble that does not load")?;
    let text = Manifest::read_text(manifest)?;
    let signature = load_signing_key(key)?.sign(text.as_bytes());
    let path = signature_path(manifest);
    std::fs::write(&path, format!("{}\n", hex_encode(&signature.to_bytes())))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::tests::shipped;
    use crate::fixture::{write_fixture_ensemble, FixtureArch, FixtureSpec};
    use dermedge::integrity::PublicKey;

    #[test]
    fn signed_ensembles_load_and_tampered_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let spec = FixtureSpec {
            arch: FixtureArch::TinyCnn,
            members: 1,
            width: 32,
            height: 24,
            seed: 1,
        };
        let manifest =
            write_fixture_ensemble(&dir.path().join("e"), &spec, shipped().infos()).unwrap();
        let (private, public) = keygen(&dir.path().join("release")).unwrap();
        assert!(keygen(&dir.path().join("release")).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let key = PublicKey::load(&public).unwrap();
        assert!(Ensemble::load_with(&manifest, Some(&key))
            .unwrap_err()
            .to_string()
            .contains("is not signed"));
        sign(&manifest, &private).unwrap();
        Ensemble::load_with(&manifest, Some(&key)).unwrap();

        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, text.replace("weight = 1.0", "weight = 2.0")).unwrap();
        let err = Ensemble::load_with(&manifest, Some(&key))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match its signature"), "{err}");
        Ensemble::load(&manifest).unwrap();
    }
}
