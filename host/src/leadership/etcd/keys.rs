//! The key layout under a store's prefix, and how each value is encoded.
//!
//! | key                     | value                                  | etcd lease            |
//! |-------------------------|----------------------------------------|-----------------------|
//! | `P/meta`                | `{"store":"charm-host","schema":2}`    | none                  |
//! | `P/id`                  | `{"id":HEX,"created_unix_ns":N}`: the store's identity | none (never deleted) |
//! | `P/genesis`             | empty, while the store is new          | one of `identity::GENESIS_TTL` |
//! | `P/lease/APP`           | `{"holder":UNIT,"term":N,"ttl":SECS,"lease":ID,"incarnation":HEX,"origin":{...}}` | the tenure's (`ID`), unless pinned |
//! | `P/term/APP`            | `{"term":N,"holder":UNIT,"ttl":SECS,"incarnation":HEX}`: the last tenure granted | none (never deleted)  |
//! | `P/released/APP`        | the last term its holder gave up, in decimal | none (never deleted)  |
//! | `P/reserved/APP`        | the unit a directed handover is for    | the reservation's     |
//! | `P/pins/APP`            | JSON array of pinning entities, sorted | none                  |
//! | `P/settings/APP`        | `{"version":N,"values":{K:V,...}}`     | none                  |
//! | `P/units/APP/N`         | unit `APP/N`'s data and writer (see `unit_data.rs`) | none        |
//! | `P/history/APP/TERM`, `P/ended/APP/TERM` | a tenure's start and end (see `history.rs`) | none |
//!
//! A settings key is put only by a write that changes the bucket, and never deleted, so etcd's
//! own count of its puts (`version` of the key) is the settings version: the watch and the
//! listing at connect read it without decoding any bucket.
//!
//! A term key written before it named its holder and TTL holds the bare term in decimal; it
//! still reads (see [`TermValue::decode`]).
//!
//! Application names never contain `/` (see [`AppName`]), so each kind of key is one
//! prefix range: listing leaders or pins reads one range. A process watches the keys of
//! the applications it follows one by one (`watch.rs`), not the ranges.

use serde::{Deserialize, Serialize};

use crate::leadership::{Claimant, IncarnationId, Origin, StoreError};
use crate::names::{AppName, UnitName};
use crate::settings::Settings;

/// The value of `P/meta`: what tells a charm-host store from other data under a prefix.
/// Schema 2 added incarnations to the lease and term keys: an agent of schema 1 ignores
/// them, and would extend another incarnation's tenure of its unit as its own, so it must
/// refuse such a prefix; it does (it accepts only its own meta value, byte for byte).
pub(super) const META: &str = r#"{"store":"charm-host","schema":2}"#;

/// The meta value of a prefix from before incarnations: taken over (raised to [`META`]) by
/// the first agent that connects.
pub(super) const META_SCHEMA_1: &str = r#"{"store":"charm-host","schema":1}"#;

/// The kinds of key of one application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Lease,
    Term,
    Released,
    Reserved,
    Pins,
    Settings,
}

/// Every kind, for parsing.
const KINDS: [Kind; 6] = [Kind::Lease, Kind::Term, Kind::Released, Kind::Reserved, Kind::Pins, Kind::Settings];

impl Kind {
    fn segment(self) -> &'static str {
        match self {
            Kind::Lease => "lease",
            Kind::Term => "term",
            Kind::Released => "released",
            Kind::Reserved => "reserved",
            Kind::Pins => "pins",
            Kind::Settings => "settings",
        }
    }
}

/// Builds and parses the keys under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    prefix: String,
}

impl Layout {
    /// `prefix` is `/`-rooted with no trailing `/` (as [`super::EtcdOptions`] checks).
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefixes this one lies inside: `/a` and `/a/b` for `/a/b/c`.
    pub fn enclosing(&self) -> Vec<String> {
        let mut outer = Vec::new();
        for (i, c) in self.prefix.char_indices().skip(1) {
            if c == '/' {
                outer.push(self.prefix[..i].to_owned());
            }
        }
        outer
    }

    pub fn meta(&self) -> String {
        format!("{}/meta", self.prefix)
    }

    /// The store's identity (see `identity.rs`).
    pub fn id(&self) -> String {
        format!("{}/id", self.prefix)
    }

    /// Present while the store is new (see `identity.rs`).
    pub fn genesis(&self) -> String {
        format!("{}/genesis", self.prefix)
    }

    /// Everything under the prefix (for the watch).
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The range holding every key of `kind`.
    pub fn range(&self, kind: Kind) -> String {
        format!("{}/{}/", self.prefix, kind.segment())
    }

    pub fn key(&self, kind: Kind, app: &AppName) -> String {
        format!("{}/{}/{app}", self.prefix, kind.segment())
    }

    /// The kind and application a key names, if it is one of ours.
    pub fn parse(&self, key: &[u8]) -> Option<(Kind, AppName)> {
        let key = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (segment, app) = key.split_once('/')?;
        let kind = KINDS.into_iter().find(|k| k.segment() == segment)?;
        Some((kind, AppName::new(app).ok()?))
    }
}

/// The value of a lease key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LeaseValue {
    pub holder: String,
    pub term: u64,
    /// The TTL of the tenure's etcd lease, in seconds, as granted.
    pub ttl: i64,
    /// The tenure's etcd lease (0 if none yet: granted while pinned). While pinned, the key
    /// is detached from it, and the last unpin binds the key to it again if it still lives.
    #[serde(default)]
    pub lease: i64,
    /// The incarnation the tenure was granted to (`None` from before incarnations: no
    /// incarnation extends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<IncarnationId>,
    /// Where it runs, as it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

impl LeaseValue {
    pub fn new(holder: &Claimant, term: u64, ttl: i64, lease: i64) -> Self {
        Self {
            holder: holder.unit().to_string(),
            term,
            ttl,
            lease,
            incarnation: Some(holder.id()),
            origin: Some(holder.incarnation().origin.clone()),
        }
    }

    /// Whether this is `claimant`'s own tenure (its unit, in its incarnation).
    pub fn held_by(&self, claimant: &Claimant) -> bool {
        self.holder == claimant.unit().as_str() && self.incarnation == Some(claimant.id())
    }

    /// The holder, checked.
    pub fn holder(&self, key: &[u8]) -> Result<UnitName, StoreError> {
        UnitName::new(&self.holder).map_err(|e| corrupt(key, e))
    }
}

/// The value of a term key: the last tenure granted. It outlives the tenure's lease key,
/// so a claimant that never saw that key still knows whose tenure ended and how long its
/// holder may have counted on it (the longest TTL it was granted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TermValue {
    pub term: u64,
    /// `None` in a term key written before it named the holder.
    #[serde(default)]
    pub holder: Option<String>,
    /// The longest TTL of the tenure's etcd leases, in seconds; `None` as for `holder`.
    #[serde(default)]
    pub ttl: Option<i64>,
    /// The holder's incarnation; `None` from before incarnations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<IncarnationId>,
}

impl TermValue {
    pub fn new(holder: &Claimant, term: u64, ttl: i64) -> Self {
        Self { term, holder: Some(holder.unit().to_string()), ttl: Some(ttl), incarnation: Some(holder.id()) }
    }

    /// The term key a grant of `lease` writes with it.
    pub fn of_lease(lease: &LeaseValue) -> Self {
        Self {
            term: lease.term,
            holder: Some(lease.holder.clone()),
            ttl: Some(lease.ttl),
            incarnation: lease.incarnation,
        }
    }

    /// A term key's value: JSON, or (as first written) the bare term in decimal.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self, StoreError> {
        match decode_number(key, value) {
            Ok(term) => Ok(Self { term, holder: None, ttl: None, incarnation: None }),
            Err(_) => decode(key, value),
        }
    }
}

/// The value of a settings key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct SettingsValue {
    pub version: u64,
    pub values: Settings,
}

/// Why a stored value could not be read: the data under the prefix is not what this
/// program wrote.
pub(super) fn corrupt(key: &[u8], what: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(format!(
        "etcd key {} holds a value this program cannot read: {what}",
        String::from_utf8_lossy(key)
    ))
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| corrupt(key, e))
}

pub(super) fn decode_number(key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()).ok_or_else(|| corrupt(key, "not a number"))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_to_their_kind_and_application() {
        let layout = Layout::new("/ch");
        let app = AppName::new("db").unwrap();
        for kind in KINDS {
            assert_eq!(layout.parse(layout.key(kind, &app).as_bytes()), Some((kind, app.clone())));
        }
        assert_eq!(layout.parse(b"/ch/meta"), None);
        assert_eq!(layout.parse(b"/other/lease/db"), None);
        assert_eq!(layout.parse(b"/ch/lease/Not-An-App"), None);
    }

    #[test]
    fn a_prefix_knows_the_prefixes_it_lies_inside() {
        assert_eq!(Layout::new("/a/b/c").enclosing(), ["/a", "/a/b"]);
        assert!(Layout::new("/top").enclosing().is_empty());
    }
}
