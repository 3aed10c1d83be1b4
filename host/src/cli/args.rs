//! Command-line arguments that follow Juju's rules.

use std::collections::HashSet;

/// Why `leader-set` arguments were refused (Juju's messages, word for word).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// An argument has no `=`.
    #[error("expected \"key=value\", got {0:?}")]
    NotAPair(String),
    /// An argument's key is empty once trimmed.
    #[error("expected \"key=value\", got \"{key}={value}\"")]
    EmptyKey {
        /// The key, trimmed (empty).
        key: String,
        /// The value, trimmed.
        value: String,
    },
    /// A key is given twice (once trimmed).
    #[error("key {0:?} specified more than once")]
    Duplicate(String),
}

/// Parses `leader-set` arguments `KEY=VALUE...` into a group, as Juju's `keyvalues` does
/// with empty values allowed: an empty argument is skipped; each other one is split at its
/// first `=`, and key and value are trimmed of white space; an empty key, or a key given
/// twice, is refused. An empty value deletes its key. The store checks the key rules
/// ([`crate::settings`]) when the group is written.
pub fn parse_leader_set_args(args: &[String]) -> Result<Vec<(String, String)>, ArgsError> {
    let mut seen = HashSet::new();
    let mut group = Vec::with_capacity(args.len());
    for arg in args.iter().filter(|a| !a.is_empty()) {
        let (key, value) = arg.split_once('=').ok_or_else(|| ArgsError::NotAPair(arg.clone()))?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(ArgsError::EmptyKey { key: key.to_owned(), value: value.to_owned() });
        }
        if !seen.insert(key) {
            return Err(ArgsError::Duplicate(key.to_owned()));
        }
        group.push((key.to_owned(), value.to_owned()));
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `leader-set` arguments: split at the first `=` (values may hold more), both sides
        /// trimmed of white space.
        #[test]
        fn leader_set_args_split_at_the_first_equals_and_trim(
            pairs in proptest::collection::btree_map("[a-z0-9.-]{1,12}", "([a-z0-9=:/]([a-z0-9=:/ ]{0,18}[a-z0-9=:/])?)?", 0..8),
            pad in "[ \t]{0,2}",
        ) {
            let args: Vec<String> = pairs.iter().map(|(k, v)| format!("{pad}{k}{pad}={pad}{v}{pad}")).collect();
            let group = parse_leader_set_args(&args).unwrap();
            prop_assert_eq!(group, pairs.into_iter().collect::<Vec<_>>());
        }

        /// An argument without `=`, an empty key, or a key given twice, is refused.
        #[test]
        fn leader_set_args_refuse_bad_input(key in "[a-z]{1,12}", value in "[a-z=]{0,10}", other in "[a-z]{0,10}") {
            prop_assert_eq!(parse_leader_set_args(std::slice::from_ref(&key)), Err(ArgsError::NotAPair(key.clone())));
            let empty_key = format!(" ={value}");
            prop_assert_eq!(parse_leader_set_args(&[empty_key]), Err(ArgsError::EmptyKey { key: String::new(), value: value.clone() }));
            let twice = [format!("{key}={value}"), format!(" {key}\t={other}")];
            prop_assert_eq!(parse_leader_set_args(&twice), Err(ArgsError::Duplicate(key)));
        }
    }
}
