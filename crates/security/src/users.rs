//! The user store (`users.jsonl`): per user, SCRAM credentials (salted and hashed; see `scram.rs`) and bearer
//! tokens, of which only the SHA-256 digest is kept (a token is random, so a digest is as safe to store as a salted
//! hash and can be found without knowing the user). Users from the settings file's `[kafka.users]` are held in
//! memory beside it, as credentials made at start.
//!
//! Checking a password costs a PBKDF2 run (4096 iterations or more, on purpose); HTTP Basic sends the password with
//! every request, so the digest of the last password that matched is remembered in memory per user, and a request
//! with the same password costs one SHA-256.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::files::{line_of, Lines};
use crate::scram::{Mechanism, ScramCredential, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::SecurityError;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserLine {
    user: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scram: Vec<ScramCredential>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tokens: Vec<TokenLine>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenLine {
    /// The token's first characters, to tell tokens apart in `weir users list`.
    id: String,
    /// SHA-256 of the whole token, hex.
    sha256: String,
}

/// What `weir users list` and DescribeUserScramCredentials show of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    /// Each mechanism the user has a credential for, with its iteration count.
    pub mechanisms: Vec<(Mechanism, u32)>,
    /// The ids (first characters) of the user's tokens.
    pub tokens: Vec<String>,
    /// From the settings file (`[kafka.users]`), not the store: `weir users` cannot change it.
    pub from_settings: bool,
}

const HEADER: &str = "weir's users, one JSON object per line: SCRAM credentials (salted and hashed) and the SHA-256 \
                      of bearer tokens. Managed with `weir users` and Kafka's AlterUserScramCredentials.";

/// Users and their credentials. Its `Debug` shows the file and the number of users, never a credential.
pub struct UserStore {
    lines: Lines<UserLine>,
    /// `[kafka.users]`, as credentials.
    settings: BTreeMap<String, Vec<ScramCredential>>,
    /// Per user, SHA-256 of (stored key, password) of the last password that matched.
    matched: Mutex<HashMap<String, [u8; 32]>>,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("path", &self.lines.path())
            .field("users", &self.lines.get().len())
            .field("settings_users", &self.settings.len())
            .finish()
    }
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses names no client could send: empty, over 255 characters, or with control characters.
pub fn check_name(user: &str) -> Result<(), SecurityError> {
    if user.is_empty() || user.len() > 255 || user.chars().any(char::is_control) {
        return Err(SecurityError::InvalidUser(user.to_string()));
    }
    Ok(())
}

impl UserStore {
    /// Opens the store at `path` beside the settings file's users (name → password).
    pub fn open(path: &Path, settings_users: &BTreeMap<String, String>) -> Result<UserStore, SecurityError> {
        let lines = Lines::<UserLine>::open(path, HEADER)?;
        for (i, u) in lines.get().iter().enumerate() {
            check_name(&u.user).map_err(|e| SecurityError::Parse {
                path: path.to_path_buf(),
                line: line_of(path, i),
                message: e.to_string(),
            })?;
        }
        Ok(UserStore { lines, settings: settings_credentials(settings_users)?, matched: Mutex::new(HashMap::new()) })
    }

    pub fn in_memory() -> UserStore {
        UserStore { lines: Lines::in_memory(), settings: BTreeMap::new(), matched: Mutex::new(HashMap::new()) }
    }

    /// A store in memory beside the settings file's users.
    pub fn in_memory_with(settings_users: &BTreeMap<String, String>) -> Result<UserStore, SecurityError> {
        Ok(UserStore { settings: settings_credentials(settings_users)?, ..UserStore::in_memory() })
    }

    pub fn path(&self) -> Option<&Path> {
        self.lines.path()
    }

    /// Sets `user`'s password for both mechanisms (adding the user if new).
    pub fn set_password(&self, user: &str, password: &str, iterations: u32) -> Result<(), SecurityError> {
        check_iterations(iterations)?;
        if password.is_empty() {
            return Err(SecurityError::InvalidCredential("the password must not be empty".into()));
        }
        for m in Mechanism::ALL {
            self.set_scram(user, ScramCredential::new(m, password, iterations))?;
        }
        Ok(())
    }

    /// Sets one mechanism's credential (AlterUserScramCredentials' upsertion).
    pub fn set_scram(&self, user: &str, credential: ScramCredential) -> Result<(), SecurityError> {
        check_name(user)?;
        check_iterations(credential.iterations)?;
        self.lines.modify(|all| {
            let line = entry(all, user);
            line.scram.retain(|c| c.mechanism != credential.mechanism);
            line.scram.push(credential);
            line.scram.sort_by_key(|c| c.mechanism);
            Ok(())
        })
    }

    /// Removes one mechanism's credential; false if the user had none for it.
    pub fn delete_scram(&self, user: &str, mechanism: Mechanism) -> Result<bool, SecurityError> {
        self.lines.modify(|all| {
            let Some(line) = all.iter_mut().find(|l| l.user == user) else {
                return Ok(false);
            };
            let before = line.scram.len();
            line.scram.retain(|c| c.mechanism != mechanism);
            let removed = line.scram.len() < before;
            all.retain(|l| !(l.scram.is_empty() && l.tokens.is_empty()));
            Ok(removed)
        })
    }

    /// Removes a user with every credential and token; false if there was none.
    pub fn remove(&self, user: &str) -> Result<bool, SecurityError> {
        let removed = self.lines.modify(|all| {
            let before = all.len();
            all.retain(|l| l.user != user);
            Ok(all.len() < before)
        })?;
        self.matched.lock().remove(user);
        Ok(removed)
    }

    /// A new bearer token for `user` (added if new): returned once, only its digest is stored.
    pub fn issue_token(&self, user: &str) -> Result<String, SecurityError> {
        check_name(user)?;
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let token = format!("weir_{}", hex(&secret));
        let line = TokenLine { id: token[..13].to_string(), sha256: hex(&Sha256::digest(token.as_bytes())) };
        self.lines.modify(|all| {
            entry(all, user).tokens.push(line);
            Ok(())
        })?;
        Ok(token)
    }

    /// Every user, the store's and the settings file's, by name.
    pub fn list(&self) -> Vec<UserInfo> {
        let mut out: BTreeMap<String, UserInfo> = BTreeMap::new();
        for (name, creds) in &self.settings {
            out.insert(
                name.clone(),
                UserInfo {
                    name: name.clone(),
                    mechanisms: creds.iter().map(|c| (c.mechanism, c.iterations)).collect(),
                    tokens: Vec::new(),
                    from_settings: true,
                },
            );
        }
        for line in self.lines.get().iter() {
            let info = out.entry(line.user.clone()).or_insert_with(|| UserInfo {
                name: line.user.clone(),
                mechanisms: Vec::new(),
                tokens: Vec::new(),
                from_settings: false,
            });
            // The store's credential is the one checked first (see `scram`): it replaces the settings file's.
            for c in &line.scram {
                info.mechanisms.retain(|(m, _)| *m != c.mechanism);
                info.mechanisms.push((c.mechanism, c.iterations));
            }
            info.mechanisms.sort();
            info.tokens = line.tokens.iter().map(|t| t.id.clone()).collect();
        }
        out.into_values().collect()
    }

    /// The user's credential for a mechanism: the store's, else the settings file's.
    pub fn scram(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
        let lines = self.lines.get();
        let stored =
            lines.iter().find(|l| l.user == user).and_then(|l| l.scram.iter().find(|c| c.mechanism == mechanism));
        stored.or_else(|| self.settings.get(user)?.iter().find(|c| c.mechanism == mechanism)).cloned()
    }

    /// Whether `password` is `user`'s (checked against the user's SCRAM-SHA-256 credential, else SHA-512's).
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        let Some(credential) = self.scram(user, Mechanism::Sha256).or_else(|| self.scram(user, Mechanism::Sha512))
        else {
            return false;
        };
        let seen = digest(&[&credential.stored_key, password.as_bytes()]);
        if self.remembered(user, &seen) {
            return true;
        }
        let ok = credential.matches(password);
        if ok {
            self.matched.lock().insert(user.to_string(), seen);
        }
        ok
    }

    /// Whether `password` is the one that last matched for `user`: one SHA-256, never PBKDF2, so a caller can answer
    /// at once and keep only the other cases (`false`: unknown, wrong, or not seen yet) for [`check_password`].
    ///
    /// [`check_password`]: UserStore::check_password
    pub fn check_remembered(&self, user: &str, password: &str) -> bool {
        let Some(credential) = self.scram(user, Mechanism::Sha256).or_else(|| self.scram(user, Mechanism::Sha512))
        else {
            return false;
        };
        self.remembered(user, &digest(&[&credential.stored_key, password.as_bytes()]))
    }

    fn remembered(&self, user: &str, seen: &[u8; 32]) -> bool {
        self.matched.lock().get(user).is_some_and(|last| bool::from(last.ct_eq(seen)))
    }

    /// The user a bearer token was issued to.
    pub fn check_token(&self, token: &str) -> Option<String> {
        let wanted = hex(&Sha256::digest(token.as_bytes()));
        let lines = self.lines.get();
        let owner =
            lines.iter().find(|l| l.tokens.iter().any(|t| bool::from(t.sha256.as_bytes().ct_eq(wanted.as_bytes()))));
        owner.map(|l| l.user.clone())
    }
}

/// The settings file's users as credentials for both mechanisms.
fn settings_credentials(
    users: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Vec<ScramCredential>>, SecurityError> {
    users
        .iter()
        .map(|(user, password)| {
            check_name(user)?;
            let creds = Mechanism::ALL.into_iter().map(|m| ScramCredential::new(m, password, MIN_ITERATIONS));
            Ok((user.clone(), creds.collect()))
        })
        .collect()
}

fn check_iterations(iterations: u32) -> Result<(), SecurityError> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(SecurityError::InvalidCredential(format!(
            "iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, got {iterations}"
        )));
    }
    Ok(())
}

fn entry<'a>(all: &'a mut Vec<UserLine>, user: &str) -> &'a mut UserLine {
    match all.iter().position(|l| l.user == user) {
        Some(i) => &mut all[i],
        None => {
            all.push(UserLine { user: user.to_string(), scram: Vec::new(), tokens: Vec::new() });
            all.last_mut().expect("just pushed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_tokens_and_settings_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.jsonl");
        let settings = BTreeMap::from([("svc".to_string(), "from-config".to_string())]);
        let store = UserStore::open(&path, &settings).unwrap();
        store.set_password("alice", "s3cret-pw", 4096).unwrap();
        let token = store.issue_token("robot").unwrap();

        let again = UserStore::open(&path, &BTreeMap::new()).unwrap();
        assert!(again.check_password("alice", "s3cret-pw"));
        assert!(again.check_password("alice", "s3cret-pw"), "the remembered digest");
        assert!(again.check_remembered("alice", "s3cret-pw"));
        assert!(!again.check_remembered("alice", "wrong") && !again.check_remembered("nobody", "s3cret-pw"));
        assert!(!again.check_password("alice", "s3cret-px"));
        assert!(!again.check_password("nobody", "s3cret-pw"));
        assert_eq!(again.check_token(&token).as_deref(), Some("robot"));
        assert_eq!(again.check_token("weir_nope"), None);
        assert!(store.check_password("svc", "from-config"));
        assert!(!again.check_password("svc", "from-config"), "settings users are not written to the store");

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret") && !text.contains(&token), "no password or token on disk");
        assert!(text.contains("SCRAM-SHA-512"));
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);

        let names: Vec<String> = store.list().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["alice", "robot", "svc"]);
        store.issue_token("svc").unwrap();
        let svc = store.list().into_iter().find(|u| u.name == "svc").unwrap();
        assert!(svc.from_settings && svc.mechanisms.len() == 2 && svc.tokens.len() == 1, "{svc:?}");
        assert!(store.delete_scram("alice", Mechanism::Sha256).unwrap());
        assert!(store.check_password("alice", "s3cret-pw"), "SHA-512's credential still checks it");
        assert!(store.remove("alice").unwrap());
        assert!(!store.remove("alice").unwrap());
        assert!(!store.check_password("alice", "s3cret-pw"));
    }

    #[test]
    fn bad_input_is_refused() {
        let store = UserStore::in_memory();
        assert!(store.set_password("", "x", 4096).is_err());
        assert!(store.set_password("a\nb", "x", 4096).is_err());
        assert!(store.set_password("a", "", 4096).is_err());
        assert!(store.set_password("a", "x", 100).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.jsonl");
        std::fs::write(&path, "{\"user\":\"a\"}\n{\"user\":\"b\",\"password\":\"x\"}\n").unwrap();
        let e = UserStore::open(&path, &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("users.jsonl:2:") && e.contains("password"), "{e}");
        std::fs::write(&path, "# a comment\n{\"user\":\"\"}\n").unwrap();
        let e = UserStore::open(&path, &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("users.jsonl:2:"), "a bad name is named by its file line: {e}");
    }
}
