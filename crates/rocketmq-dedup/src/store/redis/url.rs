//! Which Redis deployment a URL names: one server, a Cluster, or a master found through
//! Sentinel.
//!
//! | URL | deployment |
//! |---|---|
//! | `redis://[user:password@]host:port[/db]`, `rediss://…`, `redis+unix:///path` | one server |
//! | `redis+cluster://[user:password@]h1:p1,h2:p2,…` (`rediss+cluster://` for TLS) | Redis Cluster; the hosts are seeds, the rest is discovered |
//! | `redis+sentinel://[user:password@]s1:p1,s2:p2,…/master-name[/db]` (`rediss+sentinel://`) | the master Sentinel names; the credentials are the data nodes' |

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Deployment {
    /// One server: the URL as redis-rs reads it.
    Standalone(String),
    /// A Cluster: one `redis://` (or `rediss://`) URL per seed node, credentials included.
    Cluster {
        /// Seed node URLs.
        nodes: Vec<String>,
    },
    /// A master found through Sentinel.
    Sentinel(SentinelTarget),
}

/// The master a `redis+sentinel://` URL names, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SentinelTarget {
    /// `(host, port)` of each sentinel.
    pub(super) sentinels: Vec<(String, u16)>,
    /// The master's name in the sentinels' configuration.
    pub(super) master: String,
    /// TLS to the sentinels and the data nodes.
    pub(super) tls: bool,
    /// ACL user of the data nodes.
    pub(super) username: Option<String>,
    /// Password of the data nodes.
    pub(super) password: Option<String>,
    /// Database number.
    pub(super) db: i64,
}

/// Why a URL names no deployment (the URL itself is never repeated: it may hold a password).
pub(super) type UrlError = String;

impl Deployment {
    /// Reads `url`.
    pub(super) fn parse(url: &str) -> Result<Deployment, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            "no scheme (expected redis://, redis+cluster:// or redis+sentinel://)".to_owned()
        })?;
        match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => Ok(Deployment::Standalone(url.to_owned())),
            "redis+cluster" | "rediss+cluster" => {
                let base = scheme.trim_end_matches("+cluster");
                let (userinfo, hosts, path) = split(rest)?;
                if !path.is_empty() && path != "0" {
                    return Err("a Redis Cluster has only database 0".to_owned());
                }
                let nodes = hosts
                    .iter()
                    .map(|(host, port)| match userinfo {
                        Some(user) => format!("{base}://{user}@{host}:{port}"),
                        None => format!("{base}://{host}:{port}"),
                    })
                    .collect();
                Ok(Deployment::Cluster { nodes })
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let (userinfo, sentinels, path) = split(rest)?;
                let (master, db) = match path.split_once('/') {
                    Some((master, db)) => (master, db),
                    None => (path, ""),
                };
                if master.is_empty() {
                    return Err("no master name (expected redis+sentinel://host:port,…/master-name)".to_owned());
                }
                let db = match db {
                    "" => 0,
                    db => db.parse().map_err(|_| "the database is not a number".to_owned())?,
                };
                let (username, password) = credentials(userinfo)?;
                Ok(Deployment::Sentinel(SentinelTarget {
                    sentinels,
                    master: decode(master)?,
                    tls: scheme == "rediss+sentinel",
                    username,
                    password,
                    db,
                }))
            }
            other => Err(format!(
                "unknown scheme {other}:// (expected redis://, rediss://, redis+unix://, redis+cluster:// or redis+sentinel://)"
            )),
        }
    }
}

/// The parts of `[userinfo@]h1:p1,h2:p2[/path]`: userinfo, hosts, path.
type Parts<'a> = (Option<&'a str>, Vec<(String, u16)>, &'a str);

/// Splits `[userinfo@]h1:p1,h2:p2[/path]`.
fn split(rest: &str) -> Result<Parts<'_>, UrlError> {
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path.trim_end_matches('/')),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let hosts = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            let (host, port) = h
                .rsplit_once(':')
                .ok_or_else(|| format!("host {h} has no port"))?;
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("host {host} has a bad port"))?;
            if host.is_empty() {
                return Err("an empty host name".to_owned());
            }
            Ok((host.to_owned(), port))
        })
        .collect::<Result<Vec<_>, UrlError>>()?;
    if hosts.is_empty() {
        return Err("no host:port".to_owned());
    }
    Ok((userinfo, hosts, path))
}

/// `user:password`, `:password` or `user` (percent-decoded).
fn credentials(userinfo: Option<&str>) -> Result<(Option<String>, Option<String>), UrlError> {
    let Some(userinfo) = userinfo else {
        return Ok((None, None));
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
    let password = password.map(decode).transpose()?;
    Ok((user, password))
}

/// Percent-decoding of one URL component.
fn decode(s: &str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a bad %-escape".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape that is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::{Deployment, SentinelTarget};

    #[test]
    fn one_server_urls_pass_through() {
        for url in [
            "redis://127.0.0.1:6379/2",
            "rediss://:pw@h:1",
            "redis+unix:///tmp/r.sock",
        ] {
            assert_eq!(
                Deployment::parse(url),
                Ok(Deployment::Standalone(url.into()))
            );
        }
    }

    #[test]
    fn cluster_urls_become_one_url_per_seed_with_the_credentials() {
        let parsed = Deployment::parse("rediss+cluster://app:s%40cret@h1:7001,h2:7002").unwrap();
        assert_eq!(
            parsed,
            Deployment::Cluster {
                nodes: vec![
                    "rediss://app:s%40cret@h1:7001".into(),
                    "rediss://app:s%40cret@h2:7002".into()
                ]
            }
        );
        assert!(Deployment::parse("redis+cluster://h1:7001/3").is_err());
    }

    #[test]
    fn sentinel_urls_name_the_master_and_the_data_nodes_credentials() {
        let parsed =
            Deployment::parse("redis+sentinel://:p%3Aw@s1:26379,s2:26380/mymaster/4").unwrap();
        assert_eq!(
            parsed,
            Deployment::Sentinel(SentinelTarget {
                sentinels: vec![("s1".into(), 26379), ("s2".into(), 26380)],
                master: "mymaster".into(),
                tls: false,
                username: None,
                password: Some("p:w".into()),
                db: 4,
            })
        );
    }

    #[test]
    fn bad_urls_say_why_without_repeating_the_password() {
        for (url, why) in [
            ("127.0.0.1:6379", "no scheme"),
            ("http://h:1", "unknown scheme http://"),
            ("redis+cluster://", "no host:port"),
            ("redis+cluster://:secret@h1", "has no port"),
            ("redis+cluster://h1:70000", "bad port"),
            ("redis+sentinel://:secret@s1:26379", "no master name"),
            ("redis+sentinel://s1:26379/m/x", "not a number"),
        ] {
            let err = Deployment::parse(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("secret"), "{url}: {err}");
        }
    }
}
