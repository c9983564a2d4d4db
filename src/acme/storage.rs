//! The ACME storage file (`certificatesResolvers.<n>.acme.storage`, `acme.json` by default),
//! in Traefik's layout so that a Traefik user's file is read as it is:
//!
//! ```json
//! { "<resolver>": {
//!     "Account": { "Email": "...", "Registration": { "uri": "..." },
//!                  "PrivateKey": "<base64 PKCS#8>", "KeyType": "P256" },
//!     "Certificates": [ { "domain": { "main": "a.example", "sans": ["b.example"] },
//!                         "certificate": "<base64 PEM chain>", "key": "<base64 PEM key>",
//!                         "Store": "default" } ] } }
//! ```
//!
//! Several resolvers may share one file: each owns its top-level key, and a write replaces
//! that key only. Writes go to a temporary file in the same directory (mode 0600), are
//! synced, and renamed over the file, so a crash never leaves half a file behind. A file that
//! exists but cannot be read or parsed is never overwritten: its resolver stops with an
//! error instead of losing the certificates in it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Bounds what is read from a storage file: a file this large is not ACME storage.
const MAX_STORAGE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("ACME storage {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ACME storage {path}: not Traefik's acme.json layout: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("ACME storage {path}: larger than {MAX_STORAGE_BYTES} bytes")]
    TooLarge { path: PathBuf },
}

/// One resolver's part of the file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ResolverData {
    #[serde(rename = "Account", default, skip_serializing_if = "Option::is_none")]
    pub account: Option<StoredAccount>,
    #[serde(rename = "Certificates", default, deserialize_with = "null_as_empty")]
    pub certificates: Vec<StoredCertificate>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StoredAccount {
    #[serde(rename = "Email", default)]
    pub email: String,
    #[serde(
        rename = "Registration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub registration: Option<Registration>,
    /// Base64 of the account key (PKCS#8 DER for the P-256 keys written here; Traefik writes
    /// PKCS#1 RSA keys, which are not reused: a new account is registered instead).
    #[serde(rename = "PrivateKey", default)]
    pub private_key: String,
    #[serde(rename = "KeyType", default)]
    pub key_type: String,
    /// The directory the account belongs to (not in Traefik's files): an account is reused
    /// with the CA that issued it only.
    #[serde(rename = "CAServer", default, skip_serializing_if = "String::is_empty")]
    pub ca_server: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Registration {
    #[serde(default)]
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDomain {
    #[serde(default)]
    pub main: String,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub sans: Vec<String>,
}

impl StoredDomain {
    /// Every name of the certificate, main first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.main.as_str()).chain(self.sans.iter().map(String::as_str))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StoredCertificate {
    #[serde(default)]
    pub domain: StoredDomain,
    /// Base64 of the PEM chain (leaf first).
    #[serde(default)]
    pub certificate: String,
    /// Base64 of the PEM private key.
    #[serde(default)]
    pub key: String,
    #[serde(rename = "Store", default)]
    pub store: String,
}

impl StoredCertificate {
    pub fn new(domain: StoredDomain, chain_pem: &str, key_pem: &str) -> Self {
        StoredCertificate {
            domain,
            certificate: STANDARD.encode(chain_pem),
            key: STANDARD.encode(key_pem),
            store: "default".to_owned(),
        }
    }

    /// The PEM chain and key, decoded.
    pub fn pem(&self) -> Result<(String, String), String> {
        let decode = |what: &str, b64: &str| {
            STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| format!("{what} is not base64 PEM"))
        };
        Ok((
            decode("certificate", &self.certificate)?,
            decode("key", &self.key)?,
        ))
    }
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// One storage file, shared by the resolvers that name it.
pub struct Storage {
    path: PathBuf,
    /// The whole file as last read or written: resolver name → its data, and any other
    /// keys kept as they were.
    file: Mutex<BTreeMap<String, serde_json::Value>>,
}

impl Storage {
    /// Reads the file (a missing or empty file is an empty storage).
    pub fn open(path: &Path) -> Result<Storage, StorageError> {
        let io = |source| StorageError::Io {
            path: path.to_owned(),
            source,
        };
        let file = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(e)),
            Ok(meta) if meta.len() > MAX_STORAGE_BYTES => {
                return Err(StorageError::TooLarge {
                    path: path.to_owned(),
                });
            }
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "ACME storage is readable by others; it holds private keys (0600 is advised)");
                }
                let text = std::fs::read_to_string(path).map_err(io)?;
                if text.trim().is_empty() {
                    BTreeMap::new()
                } else {
                    serde_json::from_str(&text).map_err(|source| StorageError::Parse {
                        path: path.to_owned(),
                        source,
                    })?
                }
            }
        };
        Ok(Storage {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The data of `resolver` (empty when the file has none).
    pub fn resolver(&self, resolver: &str) -> Result<ResolverData, StorageError> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        match file.get(resolver) {
            None | Some(serde_json::Value::Null) => Ok(ResolverData::default()),
            Some(value) => {
                serde_json::from_value(value.clone()).map_err(|source| StorageError::Parse {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Replaces the data of `resolver` and writes the file atomically.
    pub fn save(&self, resolver: &str, data: &ResolverData) -> Result<(), StorageError> {
        let io = |source| StorageError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let value = serde_json::to_value(data).map_err(|source| StorageError::Parse {
            path: self.path.clone(),
            source,
        })?;
        file.insert(resolver.to_owned(), value);
        let text = serde_json::to_vec_pretty(&*file).map_err(|source| StorageError::Parse {
            path: self.path.clone(),
            source,
        })?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut temp = self.path.clone().into_os_string();
        temp.push(format!(".tmp-{}", std::process::id()));
        let temp = PathBuf::from(temp);
        let written = (|| {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            out.write_all(&text)?;
            out.sync_all()?;
            std::fs::rename(&temp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sallyport-acme-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A file as Traefik writes it (an RSA account, one certificate), abridged.
    const TRAEFIK_FILE: &str = r#"{
  "le": {
    "Account": {
      "Email": "ops@example.com",
      "Registration": {"body": {"status": "valid", "contact": ["mailto:ops@example.com"]},
                       "uri": "https://acme.example/acct/1"},
      "PrivateKey": "MIIJKAIBAAKCAgEA",
      "KeyType": "4096"
    },
    "Certificates": [
      {"domain": {"main": "a.example.com", "sans": ["b.example.com"]},
       "certificate": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
       "key": "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCg==",
       "Store": "default"}
    ]
  },
  "other": {"Account": null, "Certificates": null}
}"#;

    #[test]
    fn traefik_files_are_read_and_other_resolvers_survive_a_write() {
        let dir = temp_dir("layout");
        let path = dir.join("acme.json");
        std::fs::write(&path, TRAEFIK_FILE).unwrap();
        let storage = Storage::open(&path).unwrap();
        let le = storage.resolver("le").unwrap();
        assert_eq!(le.account.as_ref().unwrap().email, "ops@example.com");
        assert_eq!(le.certificates.len(), 1);
        let cert = &le.certificates[0];
        assert_eq!(
            cert.domain.names().collect::<Vec<_>>(),
            ["a.example.com", "b.example.com"]
        );
        let (chain, key) = cert.pem().unwrap();
        assert!(chain.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(storage.resolver("other").unwrap().certificates.is_empty());
        assert!(storage.resolver("absent").unwrap().account.is_none());

        let mut mine = ResolverData::default();
        mine.certificates.push(StoredCertificate::new(
            StoredDomain {
                main: "c.example.com".into(),
                sans: vec![],
            },
            "CHAIN",
            "KEY",
        ));
        storage.save("mine", &mine).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Storage::open(&path).unwrap();
        assert_eq!(again.resolver("le").unwrap().certificates.len(), 1);
        let read = again.resolver("mine").unwrap();
        assert_eq!(
            read.certificates[0].pem().unwrap(),
            ("CHAIN".into(), "KEY".into())
        );
        assert!(
            std::fs::read_dir(&dir).unwrap().count() == 1,
            "no temporary file left behind"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_or_empty_file_is_empty_and_garbage_is_an_error() {
        let dir = temp_dir("garbage");
        let path = dir.join("acme.json");
        assert!(
            Storage::open(&path)
                .unwrap()
                .resolver("x")
                .unwrap()
                .certificates
                .is_empty()
        );
        std::fs::write(&path, "  \n").unwrap();
        assert!(Storage::open(&path).is_ok());
        std::fs::write(&path, "{not json").unwrap();
        let err = Storage::open(&path).err().unwrap().to_string();
        assert!(err.contains("acme.json"), "{err}");
        std::fs::write(&path, r#"{"le": {"Certificates": 3}}"#).unwrap();
        let storage = Storage::open(&path).unwrap();
        assert!(matches!(
            storage.resolver("le"),
            Err(StorageError::Parse { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
