//! How an [`EtcdStore`](super::EtcdStore) is reached: endpoints and prefix from an
//! `etcd://` URL, timeouts, TLS and user/password, and the server-version check.

use std::path::PathBuf;
use std::time::Duration;

/// The prefix used when the URL names none.
pub const DEFAULT_PREFIX: &str = "/charm-host";

/// How to reach an etcd cluster. Build it with [`EtcdOptions::from_url`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EtcdOptions {
    /// `HOST:PORT` of each member to use.
    pub endpoints: Vec<String>,
    /// Every key lives under this `/`-rooted prefix (no trailing `/`).
    pub prefix: String,
    /// The deadline of each request. Keep it well below the renew interval, so a renewal
    /// that hangs fails in time for a retry before the guarantee runs out.
    pub request_timeout: Duration,
    /// The deadline for opening a connection to a member.
    pub connect_timeout: Duration,
    /// TLS: members are reached over HTTPS when this is set.
    pub tls: Option<EtcdTls>,
    /// User name and password, for clusters with authentication on.
    pub user: Option<(String, String)>,
    /// Connect to a server with a known lease-safety bug, with a warning, instead of refusing.
    pub allow_unsafe_server: bool,
    /// The prefix is known never to have been used by agents (a cluster the caller just
    /// made): a store created there grants at once, instead of one claim duration after its
    /// creation (which covers a prefix wiped under running agents: see `identity.rs`).
    pub unused_prefix: bool,
}

/// TLS material, as PEM files.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EtcdTls {
    /// The CA that signed the members' certificates (the system's roots are not used).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, for clusters that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name to check the members' certificates against, if not the endpoint's host.
    pub domain: Option<String>,
}

impl EtcdTls {
    /// TLS checked against `ca`, optionally with a client `identity` (certificate, key).
    pub fn new(ca: Option<PathBuf>, identity: Option<(PathBuf, PathBuf)>) -> Self {
        Self { ca, identity, domain: None }
    }
}

/// Why an etcd store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The store URL is malformed.
    #[error("bad etcd store URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS file could not be read or used.
    #[error("cannot use the TLS file {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No member answered, or the cluster has no leader.
    #[error("cannot reach etcd at {endpoints}: {reason}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The client's error.
        reason: String,
    },
    /// The server runs a version with a known lease-safety bug.
    #[error("{0} (pass --allow-unsafe-etcd to connect anyway)")]
    UnsafeServer(String),
    /// The prefix holds data that is not a charm-host store, or one from a newer version.
    #[error("the etcd prefix {prefix} {reason}")]
    Prefix {
        /// The prefix.
        prefix: String,
        /// What is there.
        reason: String,
    },
}

impl EtcdOptions {
    /// Options for `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`, with default timeouts, no
    /// TLS and no user. The prefix is one or more `/`-separated segments of letters,
    /// digits, `.`, `_` and `-`; without one, [`DEFAULT_PREFIX`].
    pub fn from_url(url: &str) -> Result<Self, ConnectError> {
        let fail = |reason: &str| ConnectError::Url { url: url.to_owned(), reason: reason.to_owned() };
        let rest = url.strip_prefix("etcd://").ok_or_else(|| fail("it must start with etcd://"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, prefix)) => (hosts, format!("/{prefix}")),
            None => (rest, DEFAULT_PREFIX.to_owned()),
        };
        let mut endpoints = Vec::new();
        for endpoint in hosts.split(',') {
            let (host, port) = endpoint.rsplit_once(':').ok_or_else(|| fail("each endpoint must be HOST:PORT"))?;
            let host_ok = !host.is_empty()
                && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
            if !host_ok {
                return Err(fail(&format!("{endpoint:?} has no valid host")));
            }
            match port.parse::<u16>() {
                Ok(port) if port > 0 => {}
                _ => return Err(fail(&format!("{endpoint:?} has no valid port (1 to 65535)"))),
            }
            // An IPv6 address in brackets, whole; anything else as the client will read it.
            let bracketed = host.starts_with('[') == host.ends_with(']') && host.matches('[').count() <= 1;
            if !bracketed || format!("http://{endpoint}").parse::<hyper::Uri>().is_err() {
                return Err(fail(&format!(
                    "{endpoint:?} is not a valid HOST:PORT (an IPv6 address goes in brackets: [::1]:2379)"
                )));
            }
            endpoints.push(endpoint.to_owned());
        }
        let segments: Vec<&str> = prefix[1..].split('/').collect();
        let segment_ok =
            |s: &&str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !segments.iter().all(segment_ok) {
            return Err(fail(
                "the prefix must be segments of letters, digits, '.', '_' and '-', with no empty segment",
            ));
        }
        Ok(Self {
            endpoints,
            prefix,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            tls: None,
            user: None,
            allow_unsafe_server: false,
            unused_prefix: false,
        })
    }

    /// These options with no request or connect deadline longer than `limit` (the agents
    /// use a quarter of the guarantee window: see [`crate::timing::store_request_timeout`]).
    pub fn with_deadlines_within(mut self, limit: Duration) -> Self {
        self.request_timeout = self.request_timeout.min(limit);
        self.connect_timeout = self.connect_timeout.min(limit);
        self
    }

    pub(super) fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }

    /// The client's connection options.
    pub(super) fn client_options(&self) -> Result<etcd_client::ConnectOptions, ConnectError> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(self.request_timeout, self.request_timeout)
            .with_require_leader(true);
        if let Some((user, password)) = &self.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        Ok(options)
    }
}

fn read_pem(path: &PathBuf) -> Result<Vec<u8>, ConnectError> {
    let pem = std::fs::read(path).map_err(|e| ConnectError::Tls { path: path.clone(), reason: e.to_string() })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
        return Err(ConnectError::Tls { path: path.clone(), reason: "it is not a PEM file".into() });
    }
    Ok(pem)
}

fn tls_options(tls: &EtcdTls) -> Result<etcd_client::TlsOptions, ConnectError> {
    let mut options = etcd_client::TlsOptions::new();
    if let Some(ca) = &tls.ca {
        options = options.ca_certificate(etcd_client::Certificate::from_pem(read_pem(ca)?));
    }
    if let Some((cert, key)) = &tls.identity {
        options = options.identity(etcd_client::Identity::from_pem(read_pem(cert)?, read_pem(key)?));
    }
    if let Some(domain) = &tls.domain {
        options = options.domain_name(domain.clone());
    }
    Ok(options)
}

/// Refuses server versions with known lease-safety bugs: before 3.4.31, 3.5.13 and 3.6.0 a
/// stale etcd leader could accept renewals (two holders could both believe they lead);
/// before 3.4.38, 3.5.23 and 3.6.5 a renewal could report success on a lease just revoked.
pub fn check_server_version(version: &str) -> Result<(), String> {
    let numbers: Vec<u64> = version.split('.').map(|n| n.parse().unwrap_or(0)).collect();
    let [major, minor, patch] = numbers[..] else {
        return Err(format!("etcd reported an unreadable version {version:?}"));
    };
    let fixed_in = match (major, minor) {
        (3, 4) => Some(38),
        (3, 5) => Some(23),
        (3, 6) => Some(5),
        (3, m) if m >= 7 => None,
        (m, _) if m > 3 => None,
        _ => return Err(format!("etcd {version} is too old: 3.4.38, 3.5.23, 3.6.5 or later is required")),
    };
    match fixed_in {
        Some(fixed) if patch < fixed => Err(format!(
            "etcd {version} has known lease-safety bugs (a renewal can succeed on a revoked or stale lease); \
             {major}.{minor}.{fixed} or later is required"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_endpoints_and_prefix() {
        let o = EtcdOptions::from_url("etcd://127.0.0.1:2379").unwrap();
        assert_eq!((o.endpoints, o.prefix.as_str()), (vec!["127.0.0.1:2379".to_owned()], DEFAULT_PREFIX));
        let o = EtcdOptions::from_url("etcd://a:1,b.example:2/team/prod").unwrap();
        assert_eq!((o.endpoints, o.prefix.as_str()), (vec!["a:1".to_owned(), "b.example:2".to_owned()], "/team/prod"));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("http://a:1", "etcd://"),
            ("etcd://", "HOST:PORT"),
            ("etcd://a", "HOST:PORT"),
            ("etcd://a:0", "port"),
            ("etcd://a:99999", "port"),
            ("etcd://:80", "host"),
            ("etcd://a:1,", "HOST:PORT"),
            ("etcd://a:1/", "prefix"),
            ("etcd://a:1/x//y", "prefix"),
            ("etcd://a:1/x y", "prefix"),
            ("etcd://[::1", "HOST:PORT"),
            ("etcd://::1:2379", "HOST:PORT"),
        ] {
            let err = EtcdOptions::from_url(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
        assert_eq!(EtcdOptions::from_url("etcd://[::1]:2379/p").unwrap().endpoints, ["[::1]:2379"]);
    }

    #[test]
    fn versions_with_lease_bugs_are_refused() {
        for ok in ["3.4.38", "3.5.23", "3.5.30", "3.6.5", "3.7.2", "4.0.0"] {
            assert_eq!(check_server_version(ok), Ok(()), "{ok}");
        }
        for bad in ["3.4.23", "3.5.12", "3.5.22", "3.6.0", "3.6.4", "3.3.27", "2.3.8", "x"] {
            assert!(check_server_version(bad).is_err(), "{bad}");
        }
    }
}
