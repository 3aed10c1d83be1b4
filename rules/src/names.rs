//! Validated names of applications and units.
//!
//! Invariants: an [`AppName`] is 1–63 characters of lowercase ASCII letters, digits and
//! `-`, starting with a letter and not ending with `-`; a [`UnitName`] is `app/N` with `N`
//! a decimal number without leading zeros. Once built, a name is always valid.

use std::fmt;
use std::str::FromStr;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// The application name is malformed.
    App {
        /// The rejected input.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The unit name is malformed.
    Unit {
        /// The rejected input.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::App { name, reason } => write!(f, "invalid application name {name:?}: {reason}"),
            NameError::Unit { name, reason } => {
                write!(f, "invalid unit name {name:?}: expected `application/number`, e.g. `app/0` ({reason})")
            }
        }
    }
}

impl std::error::Error for NameError {}

/// The name of an application, e.g. `mysql`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppName(String);

impl AppName {
    /// Validates and wraps an application name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let fail = |reason| NameError::App { name: name.to_owned(), reason };
        if name.is_empty() || name.len() > 63 {
            return Err(fail("must be 1 to 63 characters long"));
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(fail("must start with a lowercase letter"));
        }
        if name.ends_with('-') {
            return Err(fail("must not end with '-'"));
        }
        if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(fail("may contain only lowercase letters, digits and '-'"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AppName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The name of a unit, `application/number`, e.g. `mysql/0`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitName {
    app: AppName,
    number: u32,
    full: String,
}

impl UnitName {
    /// Builds the name of unit `number` of `app`.
    pub fn from_parts(app: AppName, number: u32) -> Self {
        let full = format!("{app}/{number}");
        Self { app, number, full }
    }

    /// Parses and validates `app/N`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let fail = |reason| NameError::Unit { name: name.to_owned(), reason };
        let (app, number) = name.split_once('/').ok_or_else(|| fail("missing '/'"))?;
        // A bad application part says what is wrong with it (too long, a bad character...).
        let app = AppName::new(app)?;
        let valid_digits = !number.is_empty()
            && number.chars().all(|c| c.is_ascii_digit())
            && (number == "0" || !number.starts_with('0'));
        if !valid_digits {
            return Err(fail("the unit number must be a decimal number without leading zeros"));
        }
        let number = number.parse().map_err(|_| fail("the unit number is too large"))?;
        Ok(Self::from_parts(app, number))
    }

    /// The application this unit belongs to.
    pub fn app(&self) -> &AppName {
        &self.app
    }

    /// The unit's number within its application.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The full name as a string.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl FromStr for UnitName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        let unit = UnitName::new("my-app/12").unwrap();
        assert_eq!(unit.app().as_str(), "my-app");
        assert_eq!(unit.number(), 12);
        assert_eq!(unit.to_string(), "my-app/12");
        assert!(UnitName::new("a/0").is_ok());
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "app",
            "app/",
            "/0",
            "App/0",
            "app/01",
            "app/-1",
            "app/x",
            "1app/0",
            "app-/0",
            "app/0/1",
            "app/99999999999",
        ] {
            assert!(UnitName::new(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(AppName::new(&"a".repeat(64)).is_err());
        assert!(AppName::new("with space").is_err());
    }
}

#[cfg(feature = "serde")]
macro_rules! serde_as_str {
    ($name:ident) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        /// Read back only if valid, with the same rules as [`Self::new`].
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::new(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

#[cfg(feature = "serde")]
serde_as_str!(AppName);
#[cfg(feature = "serde")]
serde_as_str!(UnitName);
