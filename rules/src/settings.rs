//! The leader-settings bucket of one application and the rules a write must follow.
//!
//! Invariants: a [`SettingsWrite`] can only be built by [`SettingsWrite::validate`], so a
//! write that reaches a store has valid keys and values, no key twice, and fits the bucket
//! limits when applied to the bucket it was validated against. Applying a write is all or
//! nothing: an empty value deletes its key, any other value sets it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest bucket, counted as the sum of key and value bytes.
pub const MAX_BUCKET_BYTES: usize = 1024 * 1024;

/// An application's leader settings: string keys to non-empty string values, sorted by key.
pub type Settings = BTreeMap<String, String>;

/// A consistent view of a bucket: its contents and the version that produced them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsSnapshot {
    /// Increases by one with every write that changed the bucket; 0 for a bucket never written.
    pub version: u64,
    /// The settings at that version.
    pub values: Arc<Settings>,
}

/// Why a group of settings was refused. Nothing of the group was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidSettings {
    /// A key was empty.
    EmptyKey,
    /// A key was longer than [`MAX_KEY_BYTES`].
    KeyTooLong {
        /// The first bytes of the key.
        key: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A key contained `=`, whitespace or a control character.
    BadKeyCharacter(String),
    /// A key appeared twice in one group.
    DuplicateKey(String),
    /// A value was longer than [`MAX_VALUE_BYTES`].
    ValueTooLong {
        /// The key whose value is too long.
        key: String,
        /// The value's length in bytes.
        len: usize,
    },
    /// The bucket would grow past [`MAX_BUCKET_BYTES`].
    BucketTooLarge {
        /// The bucket's size after the write.
        size: usize,
    },
}

impl std::fmt::Display for InvalidSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidSettings::EmptyKey => f.write_str("a key is empty"),
            InvalidSettings::KeyTooLong { key, len } => {
                write!(f, "key {key:?}... is {len} bytes long; the limit is {MAX_KEY_BYTES}")
            }
            InvalidSettings::BadKeyCharacter(key) => {
                write!(f, "key {key:?} contains '=', whitespace or a control character")
            }
            InvalidSettings::DuplicateKey(key) => write!(f, "key {key:?} is given more than once"),
            InvalidSettings::ValueTooLong { key, len } => {
                write!(f, "the value of key {key:?} is {len} bytes long; the limit is {MAX_VALUE_BYTES}")
            }
            InvalidSettings::BucketTooLarge { size } => {
                write!(f, "the settings would take {size} bytes; the limit is {MAX_BUCKET_BYTES}")
            }
        }
    }
}

impl std::error::Error for InvalidSettings {}

/// A validated group of changes, ready to be applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsWrite {
    changes: Vec<(String, Option<String>)>,
}

impl SettingsWrite {
    /// Checks every key and value of `group`, and that applying it to `current` keeps the
    /// bucket within [`MAX_BUCKET_BYTES`].
    pub fn validate(group: &[(String, String)], current: &Settings) -> Result<Self, InvalidSettings> {
        let mut seen = HashSet::with_capacity(group.len());
        let mut changes = Vec::with_capacity(group.len());
        for (key, value) in group {
            validate_key(key)?;
            if !seen.insert(key.as_str()) {
                return Err(InvalidSettings::DuplicateKey(key.clone()));
            }
            if value.len() > MAX_VALUE_BYTES {
                return Err(InvalidSettings::ValueTooLong { key: key.clone(), len: value.len() });
            }
            let value = (!value.is_empty()).then(|| value.clone());
            changes.push((key.clone(), value));
        }
        let write = Self { changes };
        let size = write.size_after(current);
        if size > MAX_BUCKET_BYTES {
            return Err(InvalidSettings::BucketTooLarge { size });
        }
        Ok(write)
    }

    /// True if the group has no changes at all.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changes: `None` deletes the key.
    pub fn changes(&self) -> &[(String, Option<String>)] {
        &self.changes
    }

    /// True if applying this write to `current` would change nothing.
    pub fn is_noop_on(&self, current: &Settings) -> bool {
        self.changes.iter().all(|(k, v)| current.get(k) == v.as_ref())
    }

    /// Applies every change to `settings`.
    pub fn apply_to(&self, settings: &mut Settings) {
        for (key, value) in &self.changes {
            match value {
                Some(value) => settings.insert(key.clone(), value.clone()),
                None => settings.remove(key),
            };
        }
    }

    fn size_after(&self, current: &Settings) -> usize {
        let mut size = bucket_size(current) as isize;
        for (key, value) in &self.changes {
            if let Some(old) = current.get(key) {
                size -= (key.len() + old.len()) as isize;
            }
            if let Some(new) = value {
                size += (key.len() + new.len()) as isize;
            }
        }
        size.max(0) as usize
    }
}

/// The size of a bucket as the limits count it: the sum of its keys' and values' bytes.
pub fn bucket_size(settings: &Settings) -> usize {
    settings.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn validate_key(key: &str) -> Result<(), InvalidSettings> {
    if key.is_empty() {
        return Err(InvalidSettings::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        let prefix: String = key.chars().take(32).collect();
        return Err(InvalidSettings::KeyTooLong { key: prefix, len: key.len() });
    }
    if key.chars().any(|c| c == '=' || c.is_whitespace() || c.is_control()) {
        return Err(InvalidSettings::BadKeyCharacter(key.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn applies_sets_and_deletes() {
        let mut bucket = Settings::new();
        bucket.insert("gone".into(), "x".into());
        let write = SettingsWrite::validate(&group(&[("a", "1"), ("gone", "")]), &bucket).unwrap();
        assert!(!write.is_noop_on(&bucket));
        write.apply_to(&mut bucket);
        assert_eq!(bucket, Settings::from([("a".to_string(), "1".to_string())]));
        assert!(write.is_noop_on(&bucket));
    }

    #[test]
    fn rejects_every_invalid_input() {
        let empty = Settings::new();
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        let long_value = "v".repeat(MAX_VALUE_BYTES + 1);
        let cases = [
            (group(&[("", "v")]), "empty"),
            (group(&[(&long_key, "v")]), "limit is 256"),
            (group(&[("a=b", "v")]), "'='"),
            (group(&[("a b", "v")]), "whitespace"),
            (group(&[("a\tb", "v")]), "whitespace"),
            (group(&[("a\u{7}", "v")]), "control"),
            (group(&[("a", "1"), ("a", "2")]), "more than once"),
            (group(&[("a", &long_value)]), "limit is 65536"),
        ];
        for (input, expected) in cases {
            let err = SettingsWrite::validate(&input, &empty).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
        assert!(SettingsWrite::validate(&group(&[(&"k".repeat(MAX_KEY_BYTES), "v")]), &empty).is_ok());
    }

    #[test]
    fn counts_the_bucket_after_the_write() {
        let value = "v".repeat(MAX_VALUE_BYTES);
        let mut bucket = Settings::new();
        for i in 0..15 {
            bucket.insert(format!("k{i:02}"), value.clone());
        }
        // 16 values of 64 KiB plus keys exceed 1 MiB...
        let err = SettingsWrite::validate(&group(&[("k15", &value)]), &bucket).unwrap_err();
        assert!(matches!(err, InvalidSettings::BucketTooLarge { .. }));
        // ...but replacing or deleting a value in the same group keeps it within.
        let ok = SettingsWrite::validate(&group(&[("k15", &value), ("k00", "")]), &bucket);
        assert!(ok.is_ok());
    }
}
