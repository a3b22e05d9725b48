//! The peer store on disk: RocksDB state, the identity key file and its permissions
//! (compiled with the `rocksdb` feature).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use intercom_crypto::KeyPair;
use serde::{Deserialize, Serialize};

use crate::{
    Batch, Decisions, Durability, KvStore, RocksStore, StoreError, DECISIONS_KEY, RESERVED_NAMES,
};

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyFile {
    public_key: String,
    secret_key: String,
}

/// An open peer store: its identity and its key-value state.
pub struct PeerStore {
    dir: PathBuf,
    keypair: KeyPair,
    created: bool,
    kv: Arc<RocksStore>,
}

impl std::fmt::Debug for PeerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerStore")
            .field("dir", &self.dir)
            .field("public_key", &hex::encode(self.keypair.public_key))
            .finish_non_exhaustive()
    }
}

/// Checks a `--peer-store-name`.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !RESERVED_NAMES.contains(&name);
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_owned()))
    }
}

impl PeerStore {
    /// Opens (creating on first run) `root/<name>/`. `root` is normally `stores`.
    pub fn open(root: &Path, name: &str, durability: Durability) -> Result<PeerStore, StoreError> {
        validate_name(name)?;
        let dir = root.join(name);
        let db_dir = dir.join("db");
        create_private_dir(&dir)?;
        create_private_dir(&db_dir)?;
        // The lock comes first: a second process stops here, before reading any key.
        let kv = RocksStore::open(&db_dir.join("state"), durability).map_err(|e| match e {
            StoreError::Db(msg)
                if msg.contains("lock") || msg.contains("Resource temporarily unavailable") =>
            {
                StoreError::Locked { path: dir.clone() }
            }
            other => other,
        })?;
        let key_path = db_dir.join("keypair.json");
        let (keypair, created) = match fs::read(&key_path) {
            Ok(bytes) => (read_key_file(&key_path, &bytes)?, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kp = KeyPair::generate();
                write_key_file(&key_path, &kp)?;
                (kp, true)
            }
            Err(e) => return Err(io_err("reading", &key_path)(e)),
        };
        restrict_permissions(&key_path, 0o600)?;
        Ok(PeerStore {
            dir,
            keypair,
            created,
            kv: Arc::new(kv),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The peer's Ed25519 identity (its swarm key pair).
    pub fn keypair(&self) -> &KeyPair {
        &self.keypair
    }

    /// True when this open created the identity (first run).
    pub fn is_new(&self) -> bool {
        self.created
    }

    /// The key-value state.
    pub fn kv(&self) -> &RocksStore {
        &self.kv
    }

    /// The key-value state, shared (for planes that keep it beyond a borrow).
    pub fn shared_kv(&self) -> Arc<RocksStore> {
        Arc::clone(&self.kv)
    }

    /// The persisted first-run decisions (all `None` before any were saved).
    pub fn decisions(&self) -> Result<Decisions, StoreError> {
        match self.kv.get(DECISIONS_KEY)? {
            None => Ok(Decisions::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                key: "peer/decisions".into(),
                why: e.to_string(),
            }),
        }
    }

    /// Merges `now` over the saved decisions, saves the result durably and returns it.
    pub fn settle_decisions(&self, now: Decisions) -> Result<Decisions, StoreError> {
        let merged = now.or(&self.decisions()?);
        let bytes = serde_json::to_vec(&merged).map_err(|e| StoreError::Corrupt {
            key: "peer/decisions".into(),
            why: e.to_string(),
        })?;
        let mut batch = Batch::default();
        batch.put(DECISIONS_KEY, &bytes);
        self.kv.write(batch, true)?;
        Ok(merged)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    restrict_permissions(dir, 0o700)
}

#[cfg(unix)]
fn restrict_permissions(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(io_err("inspecting", path))?;
    if meta.permissions().mode() & 0o777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_err("restricting permissions of", path))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path, _mode: u32) -> Result<(), StoreError> {
    Ok(())
}

fn read_key_file(path: &Path, bytes: &[u8]) -> Result<KeyPair, StoreError> {
    let bad = |why: String| StoreError::BadKeyFile {
        path: path.to_path_buf(),
        why,
    };
    let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let secret = hex::decode(file.secret_key.trim()).map_err(|e| bad(format!("secretKey: {e}")))?;
    let kp = KeyPair::from_secret_key(&secret).map_err(|e| bad(e.to_string()))?;
    if hex::encode(kp.public_key) != file.public_key.trim().to_lowercase() {
        return Err(bad("publicKey does not match secretKey".into()));
    }
    Ok(kp)
}

/// Writes the key file atomically with owner-only permissions from the start.
fn write_key_file(path: &Path, kp: &KeyPair) -> Result<(), StoreError> {
    let body = serde_json::to_vec_pretty(&KeyFile {
        public_key: hex::encode(kp.public_key),
        secret_key: hex::encode(kp.secret_key),
    })
    .map_err(|e| StoreError::BadKeyFile {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(&body).map_err(io_err("writing", &tmp))?;
    f.sync_all().map_err(io_err("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming into", path))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
